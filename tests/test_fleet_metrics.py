"""`memtop export` scraped by a real Prometheus server (Debian's `prometheus`): the leaking
line's series grows, the README's alert expression finds it, and the endpoint stays bounded,
loopback-only by default, and detaches cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    TARGETS,
    Plain,
    Targets,
    free_port,
    marked_lines,
    memtop_cli,
    wait_for,
    wait_state,
)

LEAKY = str(TARGETS / "leaky.py")
LIST_LEAK = marked_lines(TARGETS / "leaky.py")["list_leak"]
POOL = str(TARGETS / "pool.py")
WORKER_LEAK = marked_lines(TARGETS / "pool.py")["worker_leak"]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


class Export:
    """A running `memtop export`, stopped (SIGTERM) at the end."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memtop", "export", *args, "--listen",
             f"127.0.0.1:{self.port}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> str:
        return get(self.url)

    def wait_serving(self) -> str:
        def serving() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"memtop export ended: {self.proc.communicate()}")
            try:
                text = self.metrics()
            except OSError:
                return None
            return text if "memtop_site_bytes{" in text else None

        return str(wait_for(serving, 30, "memtop export to serve sites"))

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


@pytest.fixture
def export_factory() -> Iterator[list[Export]]:
    started: list[Export] = []
    yield started
    for export in started:
        export.stop()


def site_value(text: str, metric: str, site_suffix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'{site_suffix}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def readme_alert() -> tuple[str, str]:
    """(the rules file in README's Fleet section, the expression of its alert)."""
    readme = (ROOT / "README.md").read_text()
    fleet = readme.split("## Fleet", 1)[1].split("\n## ", 1)[0]
    rules = re.search(r"```yaml\n(groups:.*?)```", fleet, re.S)
    assert rules, "README's Fleet section has no rules file"
    expr = re.search(r"expr: (.+)", rules.group(1))
    assert expr
    return rules.group(1), expr.group(1).strip()


def test_prometheus_scrapes_the_leaking_line_growing(
    targets: Targets, export_factory: list[Export], tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (CI installs Debian's prometheus)")
    program, state = targets.start("leaky.py", "list")
    wait_state(state, lambda s: s["counter"] >= 2)
    # Exact mode: this slow leak (40 KB/s) takes minutes to rise above sampled error bars.
    export = Export(str(program.pid), "-i", "0.5", "--top", "5", "--mode", "exact")
    export_factory.append(export)
    export.wait_serving()
    rules, expr = readme_alert()
    (tmp_path / "rules.yml").write_text(rules)
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "rules", str(tmp_path / "rules.yml")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
    web = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: [{tmp_path / 'rules.yml'}]\n"
        "scrape_configs:\n  - job_name: memtop\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{export.port}']\n"
    )
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{web}/api/v1/query?query="

        def query(promql: str) -> list[dict]:
            reply = json.loads(get(api + urllib.parse.quote(promql)))
            assert reply["status"] == "success", reply
            return list(reply["data"]["result"])

        site = f'memtop_site_bytes{{site="{LEAKY}:{LIST_LEAK}",pid="{program.pid}"}}'

        def scraped() -> float | None:
            try:
                found = query(site)
            except OSError:
                return None
            return float(found[0]["value"][1]) if found else None

        first = wait_for(scraped, 60, "prometheus to scrape the leaking line")
        wait_for(lambda: (scraped() or 0) > first, 30, "the leaking line to grow in prometheus")
        # The README's alert expression names the leaking line once memtop calls it a suspect.
        alerting = wait_for(lambda: query(expr), 60, "the README alert expression to match")
        assert any(r["metric"]["site"] == f"{LEAKY}:{LIST_LEAK}" for r in alerting), alerting
    finally:
        server.terminate()
        server.wait(timeout=20)
    code, err = export.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_sites_leaving_the_top_n_are_dropped_and_the_end_is_clean(
    targets: Targets, export_factory: list[Export]
) -> None:
    program, state = targets.start("leaky.py", "list")
    wait_state(state, lambda s: s["counter"] >= 2)
    export = Export(str(program.pid), "-i", "0.3", "--top", "3")
    export_factory.append(export)
    text = export.wait_serving()
    sites = [line for line in text.splitlines() if line.startswith("memtop_site_bytes{")]
    assert 1 <= len(sites) <= 3
    for metric in ("rss_bytes", "traced_bytes", "untraced_bytes", "tracer_bytes"):
        assert f'memtop_{metric}{{pid="{program.pid}"}}' in text, metric
    assert site_value(text, "memtop_site_bytes", f"leaky.py:{LIST_LEAK}") is not None
    program.stop()
    try:
        export.proc.wait(timeout=30)  # every watched process ended: it ends by itself
    finally:
        code, err = export.stop()
    assert code == 3, err
    assert f"pid {program.pid}" in err and "dropped" in err and "Traceback" not in err


def test_listen_must_be_an_address_and_a_port() -> None:
    result = memtop_cli("export", "1", "--listen", "localhost")
    assert result.returncode == 1
    assert "expected ADDRESS:PORT" in result.stderr and "Traceback" not in result.stderr


def test_export_detaches_on_sigterm_and_keeps_the_agent_with_keep_agent(
    targets: Targets, export_factory: list[Export]
) -> None:
    program, state = targets.start("leaky.py", "list")
    wait_state(state, lambda s: s["counter"] >= 2)
    export = Export(str(program.pid), "-i", "0.3", "--keep-agent")
    export_factory.append(export)
    export.wait_serving()
    code, err = export.stop()
    assert code == 0 and "keeps serving" in err, err
    assert targets.connect(program).request("ping")  # still serving


def test_export_children_serves_each_worker_of_a_pool(
    plain: Plain, export_factory: list[Export]
) -> None:
    proc, state = plain.start(sys.executable, "pool.py", "2")
    workers = wait_state(state, lambda s: len(s.get("workers", [])) == 2)["workers"]
    export = Export(str(proc.pid), "--children", "-i", "0.5")
    export_factory.append(export)

    def every_worker_leaking() -> str | None:
        text = export.metrics() if export.proc.poll() is None else ""
        found = [
            pid for pid in workers
            if f'memtop_site_bytes{{pid="{pid}",site="{POOL}:{WORKER_LEAK}"}}' in text
        ]  # fmt: skip
        return text if len(found) == 2 else None

    export.wait_serving()
    text = wait_for(every_worker_leaking, 60, "both workers' leaking line")
    assert f'memtop_rss_bytes{{pid="{proc.pid}"}}' in text


def test_a_site_in_a_hostile_file_name_leaves_the_endpoint_parseable(
    short_tmp: Path, export_factory: list[Export]
) -> None:
    """A file name with a quote, a newline and a byte that is not UTF-8 (which Python keeps
    as a lone surrogate): one such site must not break the scrape of every process."""
    from prometheus_client.parser import text_string_to_metric_families

    script = Path(os.fsdecode(bytes(short_tmp) + b'/q"u\nx\xff.py'))
    ready = short_tmp / "ready"
    script.write_text(
        "import time\n"
        "held = [bytearray(4096) for _ in range(2000)]\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(300)\n"
    )
    program = subprocess.Popen([sys.executable, "-X", "tracemalloc=1", str(script)])
    try:
        wait_for(ready.exists, what="the program to allocate")
        export = Export(str(program.pid), "-i", "0.3")
        export_factory.append(export)
        text = export.wait_serving()
        sites = {
            sample.labels["site"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "memtop_site_bytes"
            for sample in family.samples
        }
        assert sites[f'{short_tmp}/q"u\nx\\xff.py:2'] >= 2000 * 4096
    finally:
        program.kill()
        program.wait()


def test_a_stopped_process_does_not_freeze_the_others_metrics(
    targets: Targets, export_factory: list[Export]
) -> None:
    """Processes are refreshed side by side: one that stops answering (SIGSTOP) leaves the
    others' series moving, and SIGTERM still ends the export at once."""
    stopped, stopped_state = targets.start("leaky.py", "list")
    running, running_state = targets.start("leaky.py", "list")
    for state in (stopped_state, running_state):
        wait_state(state, lambda s: s["counter"] >= 2)
    export = Export(str(stopped.pid), str(running.pid), "-i", "0.3")
    export_factory.append(export)
    export.wait_serving()
    metric = f'memtop_traced_bytes{{pid="{running.pid}"}}'

    def traced() -> float | None:
        line = next((x for x in export.metrics().splitlines() if x.startswith(metric)), None)
        return float(line.rsplit(" ", 1)[1]) if line is not None else None

    wait_for(lambda: traced() is not None, 20, "both processes served")
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        seen = {traced()}
        # The client's own timeout is 60 s: new values all along means nobody waited it,
        # over a span longer than the few seconds after which a process is said to be stopped.
        for _ in range(20):
            wait_for(lambda: traced() not in seen, 20, "the running process's next refresh")
            seen.add(traced())
        code, err = export.stop()
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    assert code == 0 and "Traceback" not in err, err
    assert f"pid {stopped.pid} is not answering" in err


def test_a_pid_given_twice_is_attached_once(targets: Targets, export_factory: list[Export]) -> None:
    program, state = targets.start("leaky.py", "list")
    wait_state(state, lambda s: s["counter"] >= 2)
    export = Export(str(program.pid), str(program.pid), "-i", "0.3")
    export_factory.append(export)
    export.wait_serving()
    code, err = export.stop()
    assert code == 0, err
    assert err.count(f"attached to pid {program.pid}") == 1, err
