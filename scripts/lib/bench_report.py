"""Turns the output of a full `scripts/bench` run into bench/results.json and bench/results.md and
puts the table into the README between the `bench:begin` and `bench:end` markers.

Usage: bench_report.py <raw output> <repo root>. The raw output holds `GROUP <name>` lines, one
before each group's own output, and the groups' `BENCH <key> <number>` lines; anything else is
ignored. The machine's facts (cores, memory, CPU, PostgreSQL and NATS versions) are read here, in
the same run."""

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time


def machine(pg_url, nats_host, nats_port):
    facts = {"cores": os.cpu_count(), "kernel": platform.release()}
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                facts["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    try:
        facts["postgresql"] = subprocess.run(
            ["psql", pg_url, "-Atc", "show server_version"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        facts["postgresql"] = f"unknown ({e})"
    try:
        with socket.create_connection((nats_host, nats_port), timeout=5) as s:
            line = s.makefile("rb").readline().decode()
        info = json.loads(line.split(" ", 1)[1]) if line.startswith("INFO ") else {}
        facts["nats"] = info.get("version", "unknown")
    except (OSError, ValueError) as e:
        facts["nats"] = f"unknown ({e})"
    return facts


def parse(raw):
    groups, group = {}, None
    for line in raw.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "GROUP":
            group = parts[1]
            groups[group] = {}
        elif len(parts) == 3 and parts[0] == "BENCH" and group is not None:
            try:
                groups[group][parts[1]] = float(parts[2])
            except ValueError:
                pass
    return groups


def number(value):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def table(groups, facts):
    lines = [
        f"Machine: {facts.get('cores')} cores ({facts.get('cpu', '?')}), {facts.get('memory_gib')} GiB, "
        f"PostgreSQL {facts.get('postgresql')}, NATS {facts.get('nats')}; run {facts.get('when')} "
        f"at {facts.get('commit', '?')}, {facts.get('phase_seconds')} s per measured phase"
        + "".join(f", `{k}={v}`" for k, v in facts.get("settings", {}).items() if k != "CAIRN_BENCH_SECONDS")
        + ". Keys with "
        "`raw` are the PostgreSQL (or JetStream, SMTP) limit measured in the same run; `*_rss_mib` is "
        "resident memory in MiB (`services`: each service as its own process, peak under load and "
        "idle after start; other groups: the benchmark process with the libraries it ran).",
        "",
        "| group | key | value |",
        "|---|---|---|",
    ]
    for group, figures in groups.items():
        for key, value in figures.items():
            lines.append(f"| {group} | `{key}` | {number(value)} |")
    return "\n".join(lines) + "\n"


def main():
    raw_path, root = sys.argv[1], sys.argv[2]
    with open(raw_path) as f:
        groups = parse(f.read())
    if not groups:
        sys.exit("bench_report: no figures in the run's output")
    facts = machine(
        os.environ.get("CAIRN_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        "127.0.0.1",
        int(os.environ.get("CAIRN_NATS_PORT", "4222")),
    )
    facts["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    facts["phase_seconds"] = float(os.environ.get("CAIRN_BENCH_SECONDS", "5"))
    facts["settings"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("CAIRN_BENCH_")}
    try:
        facts["commit"] = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    os.makedirs(os.path.join(root, "bench"), exist_ok=True)
    with open(os.path.join(root, "bench", "results.json"), "w") as f:
        json.dump({"machine": facts, "groups": groups}, f, indent=2)
        f.write("\n")
    rendered = table(groups, facts)
    with open(os.path.join(root, "bench", "results.md"), "w") as f:
        f.write("# Benchmark results\n\nWritten by `scripts/bench` (all groups).\n\n" + rendered)
    readme = os.path.join(root, "README.md")
    with open(readme) as f:
        text = f.read()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(<!-- bench:end -->)", re.S)
    if not pattern.search(text):
        sys.exit("bench_report: README.md has no bench:begin / bench:end markers")
    with open(readme, "w") as f:
        f.write(pattern.sub(lambda m: m.group(1) + rendered + m.group(2), text))
    print(f"bench: wrote bench/results.json, bench/results.md and the README table ({sum(len(g) for g in groups.values())} figures)")


if __name__ == "__main__":
    main()
