"""Cairn's own rules for docker-compose.yml, beyond the schema (run by scripts/check-compose).

Usage: python check_compose_rules.py docker-compose.yml

Checks that `docker compose up --scale projector=3` can work (no container_name anywhere; the
projector has no host port, no fixed hostname and no host networking), that the stack starts in
order (every Cairn service has a /readyz health check and waits, with conditions, for init to
complete and for PostgreSQL and NATS to be healthy), that no two services publish the same host
port, and that every build target names a stage of its Dockerfile whose final user is not root.
Prints every problem found and exits 1 if there is one.
"""

import re
import sys
from pathlib import Path

import yaml

APP_SERVICES = ["eventstore", "projector", "command-api", "scim-gateway", "notifier", "actions"]
SCALED = "projector"
TELEMETRY = ["otel-collector", "jaeger"]
REQUIRED_DEPENDS = {
    "init": "service_completed_successfully",
    "postgres": "service_healthy",
    "nats": "service_healthy",
}


def host_ports(service):
    """The host ports a service publishes, from short ("8080:80", "127.0.0.1:8080:80/tcp") or
    long ({published: 8080}) syntax."""
    found = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                found.append(str(entry["published"]))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) >= 2:
            found.append(parts[-2])
        # a bare container port ("8080") publishes a random host port: no clash possible
    return found


def dockerfile_stages(path):
    """{stage name: (parent, final USER or None)} of a Dockerfile; parent is the FROM image."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(?i)^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line)
        if m:
            current = (m.group(2) or f"#{len(stages)}").lower()
            stages[current] = [m.group(1).lower(), None]
            continue
        m = re.match(r"(?i)^USER\s+(\S+)", line)
        if m and current:
            stages[current][1] = m.group(1)
    return stages


def final_user(stages, name):
    """The user a stage runs as, following FROM <earlier stage> chains (None: the base image's)."""
    seen = set()
    while name in stages and name not in seen:
        seen.add(name)
        parent, user = stages[name]
        if user is not None:
            return user
        name = parent
    return None


def main(compose_path):
    compose_path = Path(compose_path)
    root = compose_path.parent
    doc = yaml.safe_load(compose_path.read_text())
    services = doc.get("services") or {}
    problems = []

    def problem(msg):
        problems.append(msg)

    # Scaling: nothing may pin a container's identity.
    for name, svc in services.items():
        if "container_name" in svc:
            problem(f"services.{name}: container_name is not allowed (it breaks --scale and parallel stacks)")

    if SCALED not in services:
        problem(f"services.{SCALED}: missing")
    else:
        svc = services[SCALED]
        if svc.get("ports"):
            problem(
                f"services.{SCALED}: must not publish host ports (ports: {svc['ports']}); "
                "`docker compose up --scale projector=3` would clash — use `expose`"
            )
        if "hostname" in svc:
            problem(f"services.{SCALED}: must not set a fixed hostname (replicas would share it)")
        if str(svc.get("network_mode", "")).startswith("host"):
            problem(f"services.{SCALED}: must not use host networking (replicas would clash on ports)")
        if (svc.get("deploy") or {}).get("replicas") is not None:
            problem(f"services.{SCALED}: deploy.replicas would fix the replica count; leave it to --scale")

    # Start order and health.
    for name in APP_SERVICES:
        svc = services.get(name)
        if svc is None:
            problem(f"services.{name}: missing")
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        if not test:
            problem(f"services.{name}: needs a healthcheck")
        elif "/readyz" not in " ".join(test if isinstance(test, list) else [test]):
            problem(f"services.{name}: the healthcheck should call /readyz (got {test})")
        deps = svc.get("depends_on")
        if not isinstance(deps, dict):
            problem(f"services.{name}: depends_on must be the long form with conditions (got {deps!r})")
            continue
        for dep, cond in deps.items():
            if not isinstance(cond, dict) or "condition" not in cond:
                problem(f"services.{name}.depends_on.{dep}: needs a condition")
        for dep, want in REQUIRED_DEPENDS.items():
            got = (deps.get(dep) or {}).get("condition") if isinstance(deps.get(dep), dict) else None
            if got != want:
                problem(f"services.{name}.depends_on.{dep}: condition must be {want} (got {got})")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in env:
            problem(f"services.{name}: environment should pass OTEL_EXPORTER_OTLP_ENDPOINT through")

    init = services.get("init")
    if init is None:
        problem("services.init: missing")
    else:
        cond = ((init.get("depends_on") or {}).get("postgres") or {}).get("condition")
        if cond != "service_healthy":
            problem(f"services.init.depends_on.postgres: condition must be service_healthy (got {cond})")
        if init.get("restart") not in (None, "no"):
            problem("services.init: a one-shot job must not restart")

    # The secrets volume belongs to init alone.
    for name, svc in services.items():
        if name == "init":
            continue
        for vol in svc.get("volumes") or []:
            source = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
            if source == "secrets":
                problem(f"services.{name}: must not mount the secrets volume (only init writes it)")

    for name in TELEMETRY:
        svc = services.get(name)
        if svc is None:
            problem(f"services.{name}: missing")
        elif "telemetry" not in (svc.get("profiles") or []):
            problem(f"services.{name}: must be in the `telemetry` profile")

    # No host port published twice.
    owners = {}
    for name, svc in services.items():
        for port in host_ports(svc):
            if port in owners:
                problem(f"host port {port} is published by both {owners[port]} and {name}")
            owners[port] = name

    # Build targets exist in their Dockerfiles and do not run as root.
    for name, svc in services.items():
        build = svc.get("build")
        if not isinstance(build, dict) or "target" not in build:
            if build is not None and name in APP_SERVICES + ["init"]:
                problem(f"services.{name}: build needs a target (a stage of deploy/Dockerfile)")
            continue
        dockerfile = root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problem(f"services.{name}: Dockerfile {dockerfile} not found")
            continue
        stages = dockerfile_stages(dockerfile)
        target = str(build["target"]).lower()
        if target not in stages:
            problem(f"services.{name}: target {target!r} is not a stage of {dockerfile} (stages: {', '.join(s for s in stages if not s.startswith('#'))})")
            continue
        user = final_user(stages, target)
        if user is None or user.split(":")[0] in ("root", "0"):
            problem(f"services.{name}: stage {target!r} of {dockerfile} must end with a non-root USER (got {user})")

    for p in problems:
        print(f"check-compose: {compose_path.name}: {p}", file=sys.stderr)
    if problems:
        print(f"check-compose: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check-compose: {compose_path.name}: scaling, start order, health checks and build targets are fine")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
