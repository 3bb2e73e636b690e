from rltuner.cli.main import main

main()
