"""Power mode, clocks, heat and energy on fake sysfs trees laid out as on JetPack 6 and 7 (Orin, Thor), on
x86 RAPL, and on replayed tegrastats lines; and what this machine says it could not read."""

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgemlic.bench.power import (
    MAX_CPU_CLOCKS,
    CellMonitor,
    Machine,
    integrate_mj,
    parse_tegrastats,
    power_mode,
    rapl_delta_uj,
)

NVPMODEL_CONF = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=2 >
"""

# Lines in tegrastats' formats: JetPack 6 (Orin Nano: now/average), JetPack 7 (AGX Orin: now/average/max,
# temperatures with their max, the GPU clock per GPC), Thor (GPU clocks without a load).
TEGRASTATS_JP6 = (
    "12-02-2026 12:00:00 RAM 2448/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [12%@1510,3%@1510,0%@1510,5%@1510,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 41%@625 "
    "cpu@51.25C soc2@49.593C soc0@50.062C gpu@50.937C tj@51.25C soc1@49.406C cv0@-256C "
    "VDD_IN 4816mW/4816mW VDD_CPU_GPU_CV 520mW/520mW VDD_SOC 1440mW/1440mW"
)
TEGRASTATS_JP7 = (
    "12-02-2026 12:00:00 RAM 20642/62817MB (lfb 1x2MB) CPU [23%@2201,10%@2201,4%@2201,14%@2201] "
    "EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off VIC off APE 174 "
    "cpu@52.968C/53.1C soc2@48.406C/48.5C gpu@47.625C/47.8C "
    "VDD_GPU_SOC 5139mW/5139mW/5200mW VDD_CPU_CV 3268mW/3268mW/3300mW VIN_SYS_5V0 5500mW/5500mW/5600mW"
)
TEGRASTATS_THOR = "RAM 4722/7844MB (lfb 1x512kB) EMC_FREQ 2%@1866 GR3D_FREQ @[1000,1000,1000] APE 150"


def _write(root: Path, relative: str, value: object) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


def _ina3221(root: Path, address: str, hwmon: str, channels: dict[int, tuple[str, int, int]]) -> Path:
    """An INA3221 as the hwmon driver lays it out: label, bus voltage (mV) and current (mA) per channel."""
    folder = f"sys/bus/i2c/drivers/ina3221/{address}/hwmon/{hwmon}"
    for channel, (label, mv, ma) in channels.items():
        _write(root, f"{folder}/in{channel}_label", label)
        _write(root, f"{folder}/in{channel}_input", mv)
        _write(root, f"{folder}/curr{channel}_input", ma)
    _write(root, f"{folder}/in7_label", "sum of shunt voltages")
    _write(root, f"{folder}/in7_input", 1234)
    return root / folder


def _cpus(root: Path, count: int, cur_khz: int, low_khz: int, high_khz: int) -> None:
    for cpu in range(count):
        folder = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(root, f"{folder}/scaling_cur_freq", cur_khz)
        _write(root, f"{folder}/scaling_min_freq", low_khz)
        _write(root, f"{folder}/scaling_max_freq", high_khz)


def _devfreq(root: Path, name: str, cur_hz: int, low_hz: int, high_hz: int) -> Path:
    folder = f"sys/class/devfreq/{name}"
    _write(root, f"{folder}/cur_freq", cur_hz)
    _write(root, f"{folder}/min_freq", low_hz)
    _write(root, f"{folder}/max_freq", high_hz)
    return root / folder


def _zone(root: Path, index: int, name: str, millidegrees: int, trips: dict[str, int]) -> Path:
    folder = f"sys/devices/virtual/thermal/thermal_zone{index}"
    _write(root, f"{folder}/type", name)
    _write(root, f"{folder}/temp", millidegrees)
    for i, (kind, limit) in enumerate(trips.items()):
        _write(root, f"{folder}/trip_point_{i}_type", kind)
        _write(root, f"{folder}/trip_point_{i}_temp", limit)
    return root / folder / "temp"


@pytest.fixture
def orin_nano_jp6(tmp_path: Path) -> Path:
    """Jetson Orin Nano on JetPack 6: one INA3221 (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC), ga10b GPU."""
    root = tmp_path / "jp6"
    _write(root, "etc/nvpmodel.conf", NVPMODEL_CONF)
    _write(root, "var/lib/nvpmodel/status", "pmode:0001")
    _ina3221(
        root,
        "1-0040",
        "hwmon1",
        {1: ("VDD_IN", 5000, 1000), 2: ("VDD_CPU_GPU_CV", 5000, 100), 3: ("VDD_SOC", 5000, 300)},
    )
    _cpus(root, 6, 1510400, 115200, 1510400)
    _devfreq(root, "17000000.ga10b", 624750000, 306000000, 624750000)
    _zone(root, 0, "cpu-thermal", 51250, {"active": 45000, "passive": 99000, "critical": 104500})
    _zone(root, 1, "gpu-thermal", 50937, {"passive": 99000, "critical": 104500})
    _zone(root, 2, "cv0-thermal", -256000, {"critical": 104500})
    return root


def test_jetpack6_orin_nano_is_read_as_documented(orin_nano_jp6):
    state = Machine(orin_nano_jp6).describe()
    assert state["power_mode"] == {
        "default_id": 2,
        "id": 1,
        "source": "/var/lib/nvpmodel/status",
        "name": "25W",
    }
    assert state["clocks_locked"] is False  # the governor may lower the clocks: minimum under maximum
    assert state["clocks_mhz"]["cpu_mhz"] == pytest.approx(1510.4)
    assert state["clocks_mhz"]["gpu_mhz"] == pytest.approx(624.8)
    assert state["temperatures_c"] == {"cpu-thermal": 51.2, "gpu-thermal": 50.9}  # cv0 is off (-256 C)
    assert state["energy_source"] == "INA3221 VDD_IN"
    assert state["not_measured"] == {"emc_clock": "EMC rate is in bpmp debugfs, readable by root only"}


def test_clocks_are_read_on_a_few_of_the_cores_this_process_runs_on(tmp_path):
    """A 64-core server: reading every core's clock every 50 ms would load the machine being measured."""
    _cpus(tmp_path, 64, 3000000, 1500000, 3700000)
    folders = Machine(tmp_path).cpufreq
    allowed = os.sched_getaffinity(0)
    assert 0 < len(folders) <= min(MAX_CPU_CLOCKS, len(allowed & set(range(64))))
    assert all(int(folder.parent.name[3:]) in allowed for folder in folders)


def test_jetson_clocks_shows_as_locked(orin_nano_jp6):
    _cpus(orin_nano_jp6, 6, 1510400, 1510400, 1510400)
    _devfreq(orin_nano_jp6, "17000000.ga10b", 624750000, 624750000, 624750000)
    assert Machine(orin_nano_jp6).clocks_locked() is True


def test_status_file_absent_means_the_conf_default(orin_nano_jp6):
    (orin_nano_jp6 / "var/lib/nvpmodel/status").unlink()
    mode = power_mode(orin_nano_jp6)
    assert (mode["id"], mode["name"]) == (2, "MAXN_SUPER")
    assert "default" in mode["source"]


def test_energy_per_image_is_module_power_over_the_loop(orin_nano_jp6):
    """VDD_IN at 5 V and 1 A is 5 W whatever the other rails draw; energy is that power over the loop."""
    with CellMonitor(Machine(orin_nano_jp6), interval_s=0.01) as monitor:
        time.sleep(0.1)
    record = monitor.record(images=40)
    assert record["mean_power_w"] == pytest.approx(5.0)
    assert record["energy_mj_per_image"] == pytest.approx(5000 * monitor.elapsed_s / 40, rel=1e-3)
    assert record["conditions"]["power_samples"] >= 2
    assert (record["clocks_dropped"], record["thermal_limit_hit"]) == (False, False)
    assert record["conditions"]["clocks_before_mhz"]["gpu_mhz"] == pytest.approx(624.8)


def test_throttling_during_a_cell_is_flagged(orin_nano_jp6):
    """The GPU's ceiling lowered and a zone past its passive trip while the loop runs: both flagged."""
    machine = Machine(orin_nano_jp6)
    with CellMonitor(machine, interval_s=0.01) as monitor:
        _devfreq(orin_nano_jp6, "17000000.ga10b", 306000000, 306000000, 420000000)
        _write(orin_nano_jp6, "sys/devices/virtual/thermal/thermal_zone1/temp", 99500)
    record = monitor.record(images=8)
    assert record["clocks_dropped"] is True
    assert record["thermal_limit_hit"] is True
    assert record["conditions"]["lowest_clocks_mhz"]["gpu_ceiling_mhz"] == pytest.approx(420.0)
    assert record["conditions"]["hottest_c"]["gpu-thermal"] == pytest.approx(99.5)


def test_a_locked_clock_running_under_its_start_has_dropped(orin_nano_jp6):
    _cpus(orin_nano_jp6, 6, 1510400, 1510400, 1510400)
    _devfreq(orin_nano_jp6, "17000000.ga10b", 624750000, 624750000, 624750000)
    with CellMonitor(Machine(orin_nano_jp6), interval_s=0.01) as monitor:
        _write(orin_nano_jp6, "sys/class/devfreq/17000000.ga10b/cur_freq", 510000000)
    assert monitor.record(images=1)["clocks_dropped"] is True


def test_jetpack7_agx_orin_sums_its_rails_without_a_module_input(tmp_path):
    """AGX Orin has no VDD_IN: two INA3221, one channel not connected (NC); the rails are summed."""
    root = tmp_path / "jp7"
    _ina3221(
        root,
        "1-0040",
        "hwmon3",
        {1: ("VDD_GPU_SOC", 5000, 1000), 2: ("VDD_CPU_CV", 5000, 600), 3: ("VIN_SYS_5V0", 5000, 1100)},
    )
    _ina3221(root, "1-0041", "hwmon4", {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 200), 3: ("NC", 0, 0)})
    _devfreq(root, "17000000.gpu", 1300500000, 306000000, 1300500000)
    machine = Machine(root)
    assert [r.name for r in machine.rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    assert machine.energy_source().startswith("sum of VDD_GPU_SOC+")
    with CellMonitor(machine, interval_s=0.01) as monitor:
        pass
    assert monitor.record(images=1)["mean_power_w"] == pytest.approx(14.5)
    assert machine.clocks()["gpu_mhz"] == pytest.approx(1300.5)


def test_thor_reads_its_input_monitor_and_gpc_clock(tmp_path):
    """Thor: the module input through an INA238 (power in uW), the GPU as gpu-gpc-0, EMC as bwmgr."""
    root = tmp_path / "thor"
    _write(root, "sys/bus/i2c/drivers/ina238/2-0044/hwmon/hwmon5/power1_input", 42_000_000)
    _ina3221(
        root,
        "2-0040",
        "hwmon6",
        {1: ("VDD_GPU", 19000, 500), 2: ("VDD_CPU_SOC_MSS", 19000, 400), 3: ("VDD_RAIL", 5000, 100)},
    )
    _devfreq(root, "gpu-gpc-0", 1000000000, 1000000000, 1575000000)
    _devfreq(root, "bwmgr", 4266000000, 2133000000, 4266000000)
    machine = Machine(root)
    assert machine.energy_source() == "INA238 VIN"
    assert machine.clocks()["emc_mhz"] == pytest.approx(4266.0)
    with CellMonitor(machine, interval_s=0.01) as monitor:
        pass
    assert monitor.record(images=1)["mean_power_w"] == pytest.approx(42.0)


def test_rapl_energy_wraps_at_its_range(tmp_path):
    assert rapl_delta_uj(262_143_000_000, 1_000_000, 262_143_328_850) == pytest.approx(1_328_850)
    root = tmp_path / "x86"
    _write(root, "sys/class/powercap/intel-rapl:0/name", "package-0")
    _write(root, "sys/class/powercap/intel-rapl:0/max_energy_range_uj", 1_000_000)
    counter = _write(root, "sys/class/powercap/intel-rapl:0/energy_uj", 900_000)
    _write(root, "sys/class/powercap/intel-rapl:0:0/energy_uj", 5)  # the core subdomain: not added again
    machine = Machine(root, tegrastats=())
    assert machine.energy_source() == "RAPL package-0 (CPU packages only)"
    with CellMonitor(machine, interval_s=10) as monitor:
        counter.write_text("300000\n")  # wrapped: 100 000 uJ to the top, then 300 000
    record = monitor.record(images=4)
    assert record["energy_mj_per_image"] == pytest.approx(400 / 4)
    assert record["mean_power_w"] == pytest.approx(0.4 / monitor.elapsed_s, rel=1e-3)


def test_unreadable_rapl_says_why(tmp_path):
    root = tmp_path / "x86"
    _write(root, "sys/class/powercap/intel-rapl:0/name", "package-0")  # energy_uj hidden from this user
    machine = Machine(root, tegrastats=())
    assert machine.rapl == []
    assert "root only" in machine.describe()["not_measured"]["energy"]


def test_nothing_readable_is_none_with_reasons_never_zero(tmp_path):
    machine = Machine(tmp_path, tegrastats=())
    state = machine.describe()
    assert state["power_mode"] == {"not_measured": "no nvpmodel (no /etc/nvpmodel.conf): not a Jetson"}
    assert set(state["not_measured"]) == {"clocks", "temperatures", "energy"}
    with CellMonitor(machine) as monitor:
        pass
    record = monitor.record(images=8)
    assert record["mean_power_w"] is None and record["energy_mj_per_image"] is None
    assert record["clocks_dropped"] is None and record["thermal_limit_hit"] is None
    assert record["conditions"] is None


def test_this_machine_says_what_it_could_and_could_not_read():
    state = Machine().describe()
    assert state["energy_source"] or state["not_measured"]["energy"]
    if state["energy_source"] is None:
        assert "not" in state["not_measured"]["energy"] or "no " in state["not_measured"]["energy"]


def test_tegrastats_lines_of_jetpack6_jetpack7_and_thor():
    jp6 = parse_tegrastats(TEGRASTATS_JP6)
    assert jp6["rails_mw"] == {"VDD_IN": 4816.0, "VDD_CPU_GPU_CV": 520.0, "VDD_SOC": 1440.0}
    assert jp6["temperatures_c"]["tj"] == 51.25 and "cv0" not in jp6["temperatures_c"]
    assert (jp6["cpu_mhz"], jp6["gpu_mhz"], jp6["emc_mhz"]) == (1510.0, 625.0, 2133.0)
    jp7 = parse_tegrastats(TEGRASTATS_JP7)
    assert jp7["rails_mw"] == {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    assert jp7["temperatures_c"]["cpu"] == 52.968
    assert (jp7["gpu_mhz"], jp7["emc_mhz"]) == (1300.0, 3199.0)
    thor = parse_tegrastats(TEGRASTATS_THOR)
    assert (thor["gpu_mhz"], thor["emc_mhz"], thor["rails_mw"]) == (1000.0, 1866.0, {})


def test_integration_is_the_trapezoid_rule():
    assert integrate_mj([(0.0, 1000.0), (1.0, 3000.0), (1.5, 3000.0)]) == pytest.approx(3500.0)
    assert integrate_mj([(0.0, 1000.0)]) is None


def test_replayed_tegrastats_gives_module_energy(tmp_path):
    """Without rails in sysfs, tegrastats runs beside the loop; here a script replays recorded lines."""
    replay = tmp_path / "tegrastats"
    replay.write_text(
        textwrap.dedent(f"""
        import sys, time
        for _ in range(200):
            print({TEGRASTATS_JP6!r}, flush=True)
            time.sleep(0.01)
        """)
    )
    machine = Machine(tmp_path / "empty", tegrastats=(sys.executable, str(replay)))
    assert machine.energy_source() == "tegrastats"
    with CellMonitor(machine, interval_s=0.01) as monitor:
        deadline = time.perf_counter() + 5
        while len(monitor._power) < 3 and time.perf_counter() < deadline:
            time.sleep(0.02)
    record = monitor.record(images=10)
    assert record["mean_power_w"] == pytest.approx(4.816)
    assert record["conditions"]["hottest_c"]["tj"] == 51.25


def test_bench_cells_carry_energy_clocks_and_their_share_of_peak(exported, val_images, orin_nano_jp6):
    """A real sweep on a machine laid out as a Jetson: every cell has its energy and conditions, and (with
    `peak`) its multiply-adds from the graph and its share of the peak measured in the same run."""
    from edgemlic.bench import run_bench
    from edgemlic.bench.peak import count_macs

    report = run_bench(
        [exported["fp32"], exported["int8-cpu"]],
        (1, 2),
        warmup=1,
        iters=3,
        device="cpu",
        images=val_images,
        peak=True,
        machine=Machine(orin_nano_jp6),
    )
    environment = report.environment
    assert environment["machine_state"]["power_mode"]["name"] == "25W"
    assert environment["peaks"]["cores"] >= 1
    gmac = count_macs(exported["fp32"]) / 1e9
    for cell in report.cells:
        assert cell.error is None, cell.error
        assert cell.mean_power_w == pytest.approx(5.0)
        assert cell.energy_mj_per_image > 0
        assert cell.conditions["clocks_before_mhz"]["gpu_mhz"] == pytest.approx(624.8)
        assert cell.gmac_per_image == pytest.approx(gmac, rel=1e-3)
        if environment["peaks"].get(f"{cell.precision}_gmac_per_s"):
            assert cell.peak_share > 0
    assert {c.precision for c in report.cells} == {"fp32", "int8"}
