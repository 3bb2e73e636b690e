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


def test_machine_key_names_amx_since_virtual_machines_of_one_model_differ() -> None:
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}
    assert machine_key({**xeon, "cpu_flags": ["avx512f", "amx_bf16", "amx_tile"]}) == (
        "Intel(R) Xeon(R) Processor with AMX, 2 cores"
    )
    assert (
        machine_key({**xeon, "cpu_flags": ["avx512f", "avx512_bf16"]})
        == "Intel(R) Xeon(R) Processor, 2 cores"
    )
