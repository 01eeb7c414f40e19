"""The host CPU record: /proc/cpuinfo of three CPU kinds (this project's Intel with AMX, an AMD EPYC of family 23
with AVX2 only, an ARM Graviton), the cgroup quota, the comparison `dfserve serve` makes, the choice `--precision
auto` makes and the CPU defaults derived from the cores."""

from __future__ import annotations

import json
from pathlib import Path

from dfserve.engine.cpu import HostCpu, allowed_cores, compare_hosts, parse_cpuinfo, quota_cores, read_host
from dfserve.export import hostspeed
from dfserve.export.policy import CPU_BATCHING, MIN_SPEEDUP, cpu_batching
from dfserve.spec.model import SPEC_FORMAT_VERSION, Batching, BuildHost, Labels, ModelSpec, Preprocessing
from dfserve.triton.hostcheck import advise

EPYC_ZEN2 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 49
model name	: AMD EPYC 7B12
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq \
pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy \
cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 \
avx2 smep bmi2 rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save \
umip rdpid

processor	: 1
model name	: AMD EPYC 7B12
flags		: fpu avx2 fma
"""

GRAVITON3 = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop \
sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
CPU revision	: 1
"""

SAPPHIRE = HostCpu(
    model="Intel(R) Xeon(R) Platinum 8480+",
    arch="x86_64",
    isa=frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16"}),
    cores=2,
    cpus=2,
)
EPYC_VNNI = HostCpu(
    "AMD EPYC 9B14", "x86_64", frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}), 2, 2
)
EPYC_AVX2 = HostCpu("AMD EPYC 7B12", "x86_64", frozenset({"avx2", "fma"}), 2, 2)


def test_cpuinfo_of_three_cpu_kinds() -> None:
    model, isa = parse_cpuinfo(EPYC_ZEN2)
    assert model == "AMD EPYC 7B12" and isa == {"avx2", "fma"}
    model, isa = parse_cpuinfo(GRAVITON3)
    assert model == "ARM implementer 0x41 part 0xd40"
    assert isa == {"asimd", "asimddp", "asimdhp", "sve", "i8mm", "bf16"}
    assert parse_cpuinfo("") == ("unknown CPU", frozenset())


def test_this_hosts_record_matches_proc_cpuinfo() -> None:
    host = read_host()
    text = Path("/proc/cpuinfo").read_text()
    flags = set(
        next(line for line in text.splitlines() if line.startswith(("flags", "Features"))).split(":")[1].split()
    )
    assert host.isa <= flags and host.model in text
    assert 1 <= host.cores <= host.cpus
    record = host.record({"int8_over_fp32": 1.5})
    assert record.isa == tuple(sorted(host.isa)) and record.measured == {"int8_over_fp32": 1.5}


def test_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert quota_cores(tmp_path) == 2
    assert allowed_cores(tmp_path) == min(2, len(__import__("os").sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert quota_cores(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cores(v1) == 4
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert quota_cores(v1) is None
    assert quota_cores(tmp_path / "absent") is None


def test_int8_built_with_vnni_served_on_avx2_warns_in_one_line() -> None:
    built = EPYC_VNNI.record({"int8_over_fp32": 1.88})
    line = compare_hosts(built, EPYC_AVX2, "int8")
    assert line is not None and "\n" not in line
    assert "lacks AVX-512 VNNI" in line and "AMD EPYC 9B14" in line and "1.88x" in line
    assert "no faster than FP32" in line and "--precision auto" in line
    # built with AMX, served with VNNI only: the AMX figure does not hold, but INT8 is still accelerated
    line = compare_hosts(SAPPHIRE.record({"int8_over_fp32": 2.5}), EPYC_VNNI, "int8")
    assert line is not None and "lacks AMX-INT8, which" in line and "AVX-512 VNNI instead" in line
    # nothing to say: the same CPU kind, a better one, FP32, or no record (a repository built before format 1.4)
    assert compare_hosts(built, EPYC_VNNI, "int8") is None
    assert compare_hosts(built, SAPPHIRE, "int8") is None
    assert compare_hosts(built, EPYC_AVX2, "fp32") is None
    assert compare_hosts(None, EPYC_AVX2, "int8") is None
    assert compare_hosts(EPYC_AVX2.record({"int8_over_fp32": 1.01}), EPYC_VNNI, "int8") is None


def test_another_architecture_is_named() -> None:
    model, isa = parse_cpuinfo(GRAVITON3)
    graviton = HostCpu(model, "aarch64", isa, cores=4, cpus=4)
    line = compare_hosts(graviton.record({"int8_over_fp32": 1.7}), EPYC_VNNI, "int8")
    assert line is not None and "x86_64" in line and "aarch64" in line and "unmeasured" in line


def speed(ratio: float) -> dict[str, object]:
    return {"over_fp32": {"int8": {"1": ratio}}, "images_per_s": {}}


def test_auto_picks_by_measurement_and_says_why() -> None:
    picked = hostspeed.choose(EPYC_VNNI, speed(1.88), {})
    assert picked.precision == "int8" and "1.88x" in picked.reason and "AVX-512 VNNI" in picked.reason
    # without VNNI/AMX: FP32, whatever a noisy measurement says
    for ratio in (1.01, 1.3):
        kept = hostspeed.choose(EPYC_AVX2, speed(ratio), {})
        assert kept.precision == "fp32" and "no INT8 instructions" in kept.reason and f"{ratio:.2f}x" in kept.reason
    slow = hostspeed.choose(SAPPHIRE, speed(MIN_SPEEDUP - 0.05), {})
    assert slow.precision == "fp32" and f"< {MIN_SPEEDUP}x" in slow.reason
    failed = hostspeed.choose(SAPPHIRE, None, {"int8": "max |Δscore| 0.05 > 0.02"})
    assert failed.precision == "fp32" and "INT8 failed its fidelity bar (max |Δscore| 0.05 > 0.02)" in failed.reason


def test_no_gain_line_only_below_the_bar() -> None:
    line = hostspeed.no_gain_line("int8", speed(1.02), EPYC_AVX2)
    assert line is not None and "INT8 buys no speed on this CPU (AMD EPYC 7B12; INT8 instructions: none)" in line
    assert hostspeed.no_gain_line("int8", speed(1.88), EPYC_VNNI) is None


def test_cpu_defaults_follow_the_cores() -> None:
    two = cpu_batching("fp32", EPYC_AVX2)
    assert two == CPU_BATCHING["fp32"]  # the measured 2-core defaults
    big = HostCpu("big", "x86_64", frozenset(), cores=32, cpus=32)
    assert cpu_batching("int8", big).preprocess_instances == 8 and cpu_batching("int8", big).engine_threads == 0
    quota = HostCpu("container", "x86_64", frozenset(), cores=4, cpus=64)
    assert cpu_batching("fp32", quota).engine_threads == 4 and cpu_batching("fp32", quota).engine_instances == 1


def spec(precision: str = "int8", build_host: BuildHost | None = None, **batching: int) -> ModelSpec:
    return ModelSpec(
        source="test",
        labels=Labels(names=("real", "fake"), activation="sigmoid", num_logits=1),
        preprocessing=Preprocessing(resize="fixed", size=(32, 32)),
        precision=precision,  # type: ignore[arg-type]
        batching=CPU_BATCHING["int8"].model_copy(update=batching),
        build_host=build_host,
    )


def test_serving_advice_adapts_defaults_not_explicit_counts() -> None:
    built = EPYC_VNNI.record({"int8_over_fp32": 1.88})
    advice = advise(spec(build_host=built), HostCpu("big", "x86_64", EPYC_VNNI.isa, cores=16, cpus=64))
    assert advice.warning is None and advice.instance_counts == {"preprocess": 4}
    assert advice.engine_threads == 16 and len(advice.notes) == 2
    explicit = advise(spec(build_host=built, preprocess_instances=1), HostCpu("big", "x86_64", EPYC_VNNI.isa, 16, 16))
    assert explicit.instance_counts == {} and explicit.engine_threads is None
    assert advise(spec(build_host=built), EPYC_AVX2).warning is not None
    assert advise(spec(), EPYC_AVX2).warning is None  # no record: nothing to compare


def test_build_host_in_the_spec_round_trips_and_older_specs_still_read() -> None:
    record = SAPPHIRE.record({"int8_over_fp32": 2.1})
    with_host = spec(build_host=record)
    assert ModelSpec.from_json(with_host.to_json()).build_host == record
    data = json.loads(spec().to_json())
    data.pop("build_host")
    data["format_version"] = "1.2"
    assert ModelSpec.from_json(json.dumps(data)).build_host is None
    newer = json.loads(with_host.to_json())
    newer["format_version"] = f"{SPEC_FORMAT_VERSION.split('.')[0]}.97"  # .99 is test_config's log-once test
    newer["build_host"]["future_field"] = 1  # a newer minor's field inside the optional record is dropped too
    assert ModelSpec.from_json(json.dumps(newer)).build_host == record
    assert Batching.model_validate(with_host.batching.model_dump()) == with_host.batching
