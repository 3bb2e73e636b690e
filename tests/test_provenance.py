import pytest

from rltuner.provenance import machine_key


@pytest.mark.parametrize(
    ("cpu", "cores", "accelerator", "key"),
    [
        ("AMD EPYC", 2, None, "AMD EPYC, 2 cores"),
        ("Intel(R) Xeon(R) Processor", 2, None, "Intel(R) Xeon(R) Processor, 2 cores"),
        ("AMD EPYC", 16, "NVIDIA H200", "AMD EPYC, 16 cores, NVIDIA H200"),
    ],
)
def test_machine_key_names_cpu_cores_and_accelerator(cpu, cores, accelerator, key) -> None:
    assert machine_key({"cpu": cpu, "cores": cores}, accelerator) == key
