"""The environment record names the CPU exactly and measures this machine's peaks; MACs are counted from
the graph."""

import math

import pytest

from edgemlic.bench.environment import cpu_identity, describe_environment, parse_cpuinfo
from edgemlic.bench.peak import count_macs, measure_peaks, peak_for

# /proc/cpuinfo as each kernel writes it (first processor; the rest repeat it)
ZEN4_EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
stepping\t: 1
microcode\t: 0xa10113e
cpu MHz\t\t: 2400.000
cache size\t: 1024 KB
physical id\t: 0
siblings\t: 192
core id\t\t: 0
cpu cores\t: 96
fpu\t\t: yes
cpuid level\t: 16
wp\t\t: yes
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx \
fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good amd_lbr_v2 nopl nonstop_tsc \
cpuid extd_apicid \
aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes \
xsave avx f16c \
rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce \
topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba \
perfmon_v2 ibrs ibpb \
stibp ibrs_enhanced vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq \
rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc \
cqm_occup_llc \
cqm_mbm_total cqm_mbm_local avx512_bf16 clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin cppc arat npt lbrv \
svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic \
v_vmsave_vmload vgif \
x2avic v_spec_ctrl vnmi avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni \
avx512_bitalg \
avx512_vpopcntdq la57 rdpid overflow_recov succor smca fsrm flush_l1d
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso
bogomips\t: 4800.00

processor\t: 1
vendor_id\t: AuthenticAMD
"""

ZEN5_EPYC = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9755 128-Core Processor
stepping\t: 1
microcode\t: 0xb002116
cpu MHz\t\t: 2700.000
cache size\t: 1024 KB
physical id\t: 0
siblings\t: 256
cpu cores\t: 128
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx \
fxsr sse sse2 ht \
syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good amd_lbr_v2 nopl nonstop_tsc \
cpuid extd_apicid \
aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes \
xsave avx f16c \
rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce \
topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba \
perfmon_v2 ibrs ibpb \
stibp ibrs_enhanced vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq \
rdseed adx smap \
avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc \
cqm_occup_llc \
cqm_mbm_total cqm_mbm_local user_shstk avx_vnni avx512_bf16 clzero irperf xsaveerptr rdpru wbnoinvd \
amd_ppin cppc \
arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic \
v_vmsave_vmload vgif x2avic v_spec_ctrl vnmi avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq \
avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid bus_lock_detect movdiri movdir64b \
overflow_recov succor smca \
fsrm avx512_vp2intersect flush_l1d
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass
bogomips\t: 5400.00
"""

SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
microcode\t: 0x2b0004d0
cpu MHz\t\t: 2000.000
cache size\t: 107520 KB
physical id\t: 0
siblings\t: 112
cpu cores\t: 56
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts \
acpi mmx fxsr sse \
sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl \
xtopology \
nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 \
ssse3 sdbg fma cx16 \
xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand \
lahf_lm abm \
3dnowprefetch cpuid_fault epb cat_l3 cat_l2 cdp_l3 invpcid_single intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp \
ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms \
invpcid cqm rdt_a \
avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw \
avx512vl xsaveopt \
xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect avx_vnni \
avx512_bf16 \
wbnoinvd dtherm ida arat pln pts hfi vnmi avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes \
vpclmulqdq \
avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri \
movdir64b enqcmd fsrm \
md_clear serialize tsxldtrk pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d \
arch_capabilities
bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs eibrs_pbrsb
bogomips\t: 4000.00
"""

JETSON_ORIN = """\
processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc \
dcpop asimddp \
uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd42
CPU revision\t: 1

processor\t: 1
"""


def test_zen4_epyc_is_named_exactly():
    cpu = parse_cpuinfo(ZEN4_EPYC)
    assert (cpu.name, cpu.vendor, cpu.family, cpu.model, cpu.stepping) == (
        "AMD EPYC 9654 96-Core Processor",
        "AuthenticAMD",
        25,
        17,
        1,
    )
    assert cpu.microcode == "0xa10113e"
    assert cpu.microarchitecture == "Zen 4"
    assert cpu.flags == ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16")  # no AVX-VNNI, no AMX


def test_zen5_epyc_is_told_from_zen4():
    """The case behind issue 22: both read "AMD EPYC, AVX-512 VNNI"; family 26 is the one with 2x INT8."""
    cpu = parse_cpuinfo(ZEN5_EPYC)
    assert (cpu.family, cpu.model, cpu.stepping, cpu.microcode) == (26, 2, 1, "0xb002116")
    assert cpu.microarchitecture == "Zen 5"
    assert "avx_vnni" in cpu.flags and "avx512_vnni" in cpu.flags


def test_sapphire_rapids_with_amx():
    cpu = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert (cpu.vendor, cpu.family, cpu.model, cpu.stepping) == ("GenuineIntel", 6, 143, 8)
    assert cpu.microarchitecture == "Sapphire Rapids"
    assert cpu.flags == (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
    )


def test_jetson_arm_cores():
    cpu = parse_cpuinfo(JETSON_ORIN)
    assert (cpu.vendor, cpu.model, cpu.stepping) == ("0x41", 0xD42, 1)  # Arm Cortex-A78AE, revision 1
    assert cpu.flags == ("asimddp",)
    assert cpu.microcode is None and cpu.microarchitecture is None


def test_record_names_the_cpu_and_the_machine_state(tmp_path):
    environment = describe_environment([])
    identity = environment["cpu_identity"]
    assert identity == cpu_identity().to_dict()
    assert environment["cpu"] == identity["name"]
    state = environment["machine_state"]
    assert state["energy_source"] or state["not_measured"]["energy"]  # read, or why not; never 0
    assert "peaks" not in environment  # measured only when asked


@pytest.mark.usefixtures("x86_compiler")
def test_peak_loops_compile_and_run():
    flags = set(cpu_identity().all_flags)
    if "avx2" not in flags:
        pytest.skip("the CPU has no AVX2")
    peaks = measure_peaks(1, flags, seconds=0.05)
    for key in ("int8_gmac_per_s", "fp32_gmac_per_s", "core_ghz"):
        assert peaks[key] > 0 and math.isfinite(peaks[key]), peaks
    assert peaks["int8_kernel"] in ("avx512_vnni", "avx_vnni", "avx2")
    assert peak_for(peaks, "int8", 1) == peaks["int8_gmac_per_s"]
    assert peak_for(peaks, "fp16", 1) is None


@pytest.mark.usefixtures("x86_compiler")
def test_the_avx2_fallbacks_run_where_vnni_is_absent():
    flags = set(cpu_identity().all_flags)
    if not {"avx2", "fma"} <= flags:
        pytest.skip("the CPU has no AVX2 with FMA")
    peaks = measure_peaks(1, {"avx2", "fma"}, seconds=0.05)
    assert (peaks["int8_kernel"], peaks["fp32_kernel"]) == ("avx2", "avx2_fma")
    assert peaks["int8_gmac_per_s"] > 0 and peaks["fp32_gmac_per_s"] > 0


def test_no_compiler_is_not_measured_with_the_reason():
    peaks = measure_peaks(1, {"avx2", "fma", "avx512f", "avx512_vnni"}, compiler="no-such-cc")
    assert peaks["int8_gmac_per_s"] is None and peaks["fp32_gmac_per_s"] is None
    reason = peaks["not_measured"]["int8"]
    assert "no-such-cc" in reason or "x86-64" in reason


def test_macs_are_counted_from_the_graph(tmp_path):
    """Conv 3->4 (3x3, pad 1) and a grouped conv 4->4 (groups 2) on 8x8, then Linear 256->5, by hand:
    4*8*8 outputs x 3*3*3 + 4*8*8 x 2*3*3 + 256*5 = 6912 + 4608 + 1280 = 12800 per image."""
    torch = pytest.importorskip("torch")

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1, groups=2),
        torch.nn.Flatten(),
        torch.nn.Linear(256, 5),
    ).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, 8, 8),),
        str(path),
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
        dynamo=False,
    )
    assert count_macs(path) == 12800


def test_int8_graphs_count_as_their_float_graph(exported):
    """QDQ INT8 (TensorRT form) and the CPU form do the same multiply-adds as FP32."""
    fp32 = count_macs(exported["fp32"])
    assert fp32 > 0
    assert count_macs(exported["int8"]) == fp32
    assert count_macs(exported["int8-cpu"]) == fp32
