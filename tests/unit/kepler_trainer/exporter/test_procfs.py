"""The exporter's procfs reader against node-exporter's definitions on the same files (proc(5) formats):
CPU ticks / USER_HZ per cpu and mode, guest time apart, the intr total, ctxt, meminfo kB * 1024 with
`Key(sub)` -> `Key_sub`, unit-less meminfo lines as they are, the load averages, uptime as the clock."""

from __future__ import annotations

from kepler_trainer.exporter import procfs

STAT = """cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335 10 2017 884 7 3 11 5 400 9
intr 114930548 113199788 3 0 5 263 0 4 [trailing garbage]
ctxt 1990473561
btime 1062191376
processes 2915969
procs_running 1
procs_blocked 0
softirq 12 1 2 3
"""
MEMINFO = """MemTotal:       16318912 kB
Active:          5005876 kB
Active(anon):    3351924 kB
HugePages_Total:       7
broken line without a number
"""


def _tree(tmp_path, **files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_node_exporter_series_from_procfs_files(tmp_path):
    root = _tree(tmp_path, stat=STAT, meminfo=MEMINFO, loadavg="0.52 0.58 0.59 2/1181 4242\n",
                 uptime="350735.47 234388.90\n")
    snap = procfs.read(root)
    assert snap.problems == [] and snap.uptime == 350735.47
    cpu = snap.series["node_cpu_seconds_total"]
    assert cpu[(("cpu", "0"), ("mode", "user"))] == 13932.80
    assert cpu[(("cpu", "1"), ("mode", "steal"))] == 0.05 and cpu[(("cpu", "1"), ("mode", "softirq"))] == 0.11
    assert len(cpu) == 16  # eight modes on two CPUs; the aggregate line is not a CPU
    guest = snap.series["node_cpu_guest_seconds_total"]
    assert guest[(("cpu", "1"), ("mode", "user"))] == 4.0 and guest[(("cpu", "1"), ("mode", "nice"))] == 0.09
    assert snap.series["node_intr_total"][()] == 114930548
    assert snap.series["node_context_switches_total"][()] == 1990473561
    assert snap.series["node_forks_total"][()] == 2915969 and snap.series["node_boot_time_seconds"][()] == 1062191376
    assert snap.series["node_memory_Active_bytes"][()] == 5005876 * 1024
    assert snap.series["node_memory_Active_anon_bytes"][()] == 3351924 * 1024
    assert snap.series["node_memory_HugePages_Total"][()] == 7
    assert snap.series["node_load15"][()] == 0.59


def test_missing_files_and_fields_are_problems_not_errors(tmp_path):
    root = _tree(tmp_path, stat="cpu0 1 2 x\nctxt\n")
    snap = procfs.read(root)
    assert "node_context_switches_total" not in snap.series and "node_cpu_seconds_total" not in snap.series
    assert {p.split(":")[0] for p in snap.problems} == {"uptime", "meminfo", "loadavg"}
    assert procfs.read(str(tmp_path / "absent")).problems


def test_only_the_files_asked_for_are_read(tmp_path):
    root = _tree(tmp_path, stat=STAT, uptime="1.0 1.0\n")
    snap = procfs.read(root, {"stat"})
    assert snap.problems == [] and "node_memory_Active_bytes" not in snap.series
    assert procfs.file_of("node_memory_Active_bytes") == "meminfo" and procfs.file_of("node_intr_total") == "stat"
    assert procfs.file_of("node_hwmon_temp_celsius") is None
