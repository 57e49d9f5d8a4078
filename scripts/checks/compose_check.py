"""Checks of the compose development stack that need no Docker engine.

Run by scripts/checks/compose.sh (with PyYAML and jsonschema from a venv outside the
clone); not meant to be run alone. Exit status 0 only when every check passed.

1. The file as Compose reads it: YAML (duplicate keys refused, anchors and merge keys
   resolved), variables interpolated from the env file (a required or unset variable
   missing from it is an error), no obsolete top-level `version`.
2. Unless --skip-schema (compose.sh skips it when `docker compose config` ran instead):
   the Compose Specification JSON schema kept in compose/schema/.
3. This stack's own rules: depends_on targets and conditions, a healthcheck on every
   long-running service and on every service_healthy target, every mounted file and the
   build context inside the repository, named volumes/secrets/networks declared, ports
   bound to 127.0.0.1 and unique, the Keycloak realm from config/, no literal secrets,
   .env.example commented, compose/loanfolio.toml and LOANFOLIO__* keys known to
   config/default.toml, clamd's limits >= the upload limit, the Dockerfile's essentials.
4. What Compose or the engine refuses only when it creates the containers, which the schema
   cannot express (check_create_time): a secret or config that is not a file mounted into a
   `read_only` service (Compose >= 2.34 refuses it, docker/compose#12531; older versions
   fail in the engine), uid/gid/mode on a file-sourced secret (ignored outside Swarm: the
   file keeps the host's owner and mode), `network_mode: service:…` beside ports or
   networks, `container_name` on a scaled service, dependency cycles, and an image with
   `pull_policy: never` that no service of the file builds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path, PurePosixPath

import jsonschema
import yaml

FAILURES: list[str] = []


def fail(message: str) -> None:
    FAILURES.append(message)
    print(f"  FAIL {message}")


def ok(message: str) -> None:
    print(f"  ok   {message}")


# --- loading ------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping, as Compose does."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        if not match:
            fail(f"{path.name}:{number}: not KEY=VALUE: {line!r}")
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[match.group(1)] = value
    return env


# Compose interpolation: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}; defaults may nest ${...}.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def interpolate(text: str, env: dict[str, str], where: str, used: set[str]) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth += 1
                    j += 2
                    continue
                if text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                fail(f"{where}: unterminated ${{…}} in {text!r}")
                return text
            body = text[i + 2 : j - 1]
            match = re.fullmatch(rf"({_NAME})(?:(:?[-?+])(.*))?", body, re.S)
            if not match:
                fail(f"{where}: invalid interpolation ${{{body}}}")
                out.append(text[i:j])
                i = j
                continue
            name, op, arg = match.group(1), match.group(2), match.group(3) or ""
            used.add(name)
            value = env.get(name)
            is_set = value is not None
            is_nonempty = bool(value)
            if op is None:
                if not is_set:
                    fail(f"{where}: ${{{name}}} is not set in the env file (and has no default)")
                out.append(value or "")
            elif op in (":-", "-"):
                present = is_nonempty if op == ":-" else is_set
                out.append(value if present else interpolate(arg, env, where, used))
            elif op in (":?", "?"):
                present = is_nonempty if op == ":?" else is_set
                if not present:
                    fail(f"{where}: required variable {name} is missing from the env file ({arg})")
                out.append(value or "")
            else:  # :+ / +
                present = is_nonempty if op == ":+" else is_set
                out.append(interpolate(arg, env, where, used) if present else "")
            i = j
            continue
        match = re.match(_NAME, text[i + 1 :])
        if match:
            name = match.group(0)
            used.add(name)
            if name not in env:
                fail(f"{where}: ${name} is not set in the env file")
            out.append(env.get(name, ""))
            i += 1 + len(name)
            continue
        fail(f"{where}: a lone '$' in {text!r} (write $$ for a literal dollar)")
        out.append("$")
        i += 1
    return "".join(out)


def interpolate_tree(node, env, path, used):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, f"{path}.{k}", used) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{path}[{n}]", used) for n, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, path, used)
    return node


# --- helpers ------------------------------------------------------------------------------


def as_list_of_names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value)
    return [v if isinstance(v, str) else v.get("source", "") for v in value]


def service_volumes(service: dict) -> list[dict]:
    """Volumes in long form: {type, source, target, read_only}."""
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            result.append(entry)
            continue
        parts = entry.split(":")
        if len(parts) == 1:
            result.append({"type": "volume", "source": None, "target": parts[0]})
            continue
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append(
            {"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")}
        )
    return result


def parse_size(value: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([kKmMgG]?)[bB]?", value.strip())
    if not match:
        raise ValueError(value)
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * factor


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


# --- configuration keys -------------------------------------------------------------------


def known_config_keys(default_toml: Path) -> set[str]:
    """Dotted keys the service accepts: those config/default.toml sets, those it shows
    commented out (`# key = …`, `# [section]`), and the `*_file` forms it names."""
    keys: set[str] = set()

    def walk(table, prefix):
        for key, value in table.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                keys.add(dotted)
                walk(value, dotted + ".")
            else:
                keys.add(dotted)

    walk(tomllib.loads(default_toml.read_text()), "")
    section = ""
    for line in default_toml.read_text().splitlines():
        header = re.match(r"^#?\s*\[([a-z0-9_.]+)\]\s*$", line)
        if header:
            section = header.group(1)
            keys.add(section)
            continue
        prefix = f"{section}." if section else ""
        if line.lstrip().startswith("#"):
            assignment = re.match(r"^#\s*([a-z_][a-z0-9_]*)\s*=", line)
            if assignment:
                keys.add(prefix + assignment.group(1))
            for name in re.findall(r"\b([a-z][a-z0-9_]*_file)\b", line):
                keys.add(prefix + name)
    return keys


# Keys whose values are secrets: never inline in a committed file (their `_file` form is).
SECRET_KEYS = {
    "database.url", "rabbitmq.url", "redis.url", "s3.secret_access_key",
    "oidc.client_secret", "kms.vault.token", "bureau.api_key", "los.api_key",
    "los.webhook_secrets", "notifications.smtp.password", "notifications.sms.auth_token",
    "bureau.oauth2.client_secret",
}


def flatten_toml(table, prefix=""):
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield dotted, None
            yield from flatten_toml(value, dotted + ".")
        else:
            yield dotted, value


# --- the checks ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compose", type=Path, required=True)
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--schema", type=Path, required=True)
    parser.add_argument("--root", type=Path, help="the repository (default: compose dir's parent)")
    parser.add_argument("--skip-schema", action="store_true")
    args = parser.parse_args()

    compose_path = args.compose.resolve()
    compose_dir = compose_path.parent
    root = (args.root or compose_dir.parent).resolve()

    print(f"checking {compose_path} (env file {args.env_file})")

    # 1. Load as Compose would.
    try:
        raw = yaml.load(compose_path.read_text(), Loader=StrictLoader)
    except yaml.YAMLError as error:
        fail(f"not valid YAML: {error}")
        return report()
    if not isinstance(raw, dict):
        fail("the file is not a mapping")
        return report()
    ok("YAML parses (no duplicate keys)")

    env = read_env_file(args.env_file)
    used: set[str] = set()
    before = len(FAILURES)
    doc = interpolate_tree(raw, env, "compose", used)
    if len(FAILURES) == before:
        ok(f"interpolation: {len(used)} variables, all defined in {args.env_file.name}")
    # Compose itself reads COMPOSE_PROFILES from the env file.
    used.add("COMPOSE_PROFILES")

    if "version" in doc:
        fail("top-level `version` is obsolete in the Compose Specification: remove it")

    # 2. The Compose Specification schema.
    if args.skip_schema:
        print("  --   schema: skipped (docker compose config validated the file)")
    else:
        schema = json.loads(args.schema.read_text())
        # The schema is draft-07 (its "$schema" URI lacks the "#" jsonschema looks up).
        jsonschema.Draft7Validator.check_schema(schema)
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            fail(f"schema: {where}: {error.message}")
        if not errors:
            ok(f"valid against the Compose Specification schema ({args.schema.name})")

    services: dict = doc.get("services") or {}
    if not services:
        fail("no services")
        return report()
    declared_volumes = set((doc.get("volumes") or {}).keys())
    declared_secrets = doc.get("secrets") or {}
    declared_networks = set((doc.get("networks") or {}).keys()) | {"default"}

    # depends_on, healthchecks.
    completed_targets = set()
    healthy_targets = set()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            if target not in services:
                fail(f"{name}: depends_on an unknown service {target!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
                fail(f"{name}: depends_on {target}: unknown condition {condition!r}")
            if condition == "service_healthy":
                healthy_targets.add(target)
            elif condition == "service_completed_successfully":
                completed_targets.add(target)

    def has_healthcheck(service) -> bool:
        check = service.get("healthcheck") or {}
        disabled = str(check.get("disable", "false")).lower() == "true"
        return bool(check.get("test")) and not disabled and check.get("test") != ["NONE"]

    for target in sorted(healthy_targets):
        if not has_healthcheck(services[target]):
            fail(f"{target}: others wait for it with service_healthy but it has no healthcheck")
    for target in sorted(completed_targets):
        restart = str(services[target].get("restart", "no"))
        if restart not in ("no", "on-failure") and not restart.startswith("on-failure"):
            fail(f"{target}: a one-shot (service_completed_successfully) must not restart: {restart}")
    long_running = [
        n for n, s in services.items()
        if n not in completed_targets and not is_tool(s) and str(s.get("restart", "no")) != "no"
    ]
    for name in long_running:
        if not has_healthcheck(services[name]):
            fail(f"{name}: a long-running service without a healthcheck")
    # Every service is either long-running (a restart policy), a one-shot another service
    # waits for, or an on-demand tool (the `tools` profile).
    for name, service in services.items():
        if (name not in completed_targets and not is_tool(service)
                and str(service.get("restart", "no")) == "no"):
            fail(f"{name}: neither long-running (no restart policy) nor a one-shot anyone waits for")
    ok(f"depends_on: {len(healthy_targets)} service_healthy targets, "
       f"{len(completed_targets)} one-shots; {len(long_running)} long-running services checked for healthchecks")

    # Mounts, build, secrets, networks.
    mounted_files = 0
    for name, service in services.items():
        for volume in service_volumes(service):
            source = volume.get("source")
            if volume.get("type") == "bind":
                if not source or source.startswith(("/", "~")):
                    fail(f"{name}: bind mount {source!r} is not a path inside the repository")
                    continue
                path = (compose_dir / source)
                if not inside(path, root):
                    fail(f"{name}: bind mount {source} leaves the repository")
                elif not path.exists():
                    fail(f"{name}: bind mount {source} does not exist ({path})")
                else:
                    mounted_files += 1
            elif volume.get("type") == "volume" and source and source not in declared_volumes:
                fail(f"{name}: volume {source!r} is not declared under top-level volumes")
        for secret in as_list_of_names(service.get("secrets")):
            if secret not in declared_secrets:
                fail(f"{name}: secret {secret!r} is not declared under top-level secrets")
        for network in as_list_of_names(service.get("networks")):
            if network not in declared_networks:
                fail(f"{name}: network {network!r} is not declared")
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            context_path = compose_dir / context
            if not context_path.is_dir() or not inside(context_path, root):
                fail(f"{name}: build context {context} is not a folder of the repository")
            elif not (context_path / dockerfile).is_file():
                fail(f"{name}: Dockerfile {dockerfile} not found in the build context")
            elif not (context_path / ".dockerignore").is_file():
                fail(f"{name}: the build context has no .dockerignore (it would send target/, .local/, …)")
            else:
                check_dockerfile(context_path / dockerfile)
    for secret, spec in declared_secrets.items():
        if "file" in spec:
            path = compose_dir / spec["file"]
            if not path.is_file() or not inside(path, root):
                fail(f"secret {secret}: file {spec['file']} not found in the repository")
        if "environment" in spec:
            used.add(spec["environment"])
            if spec["environment"] not in env:
                fail(f"secret {secret}: variable {spec['environment']} is not in {args.env_file.name}")
    ok(f"{mounted_files} bind mounts exist inside the repository; volumes, secrets, networks declared")
    # Every variable of the env file is used (by interpolation or as a secret's source).
    unused = sorted(set(env) - used)
    if unused:
        fail(f"{args.env_file.name} defines variables compose.yaml never uses: {', '.join(unused)}")

    # Ports: loopback only, no clashes.
    host_ports: dict[str, str] = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip, published = port.get("host_ip"), str(port.get("published", ""))
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
                published = parts[-2] if len(parts) >= 2 else ""
            if host_ip != "127.0.0.1":
                fail(f"{name}: port {port} is not bound to 127.0.0.1 (a development stack stays off the network)")
            if published in host_ports and not alternatives(services[host_ports[published]], service):
                fail(f"{name}: host port {published} is also published by {host_ports[published]}")
            host_ports[published] = name
    ok(f"{len(host_ports)} published ports, all on 127.0.0.1: {', '.join(sorted(host_ports, key=lambda p: int(p) if p.isdigit() else 0))}")

    # No literal secrets in compose.yaml.
    check_no_literal_secrets(raw)

    # The Keycloak realm.
    realm_file = root / "config" / "keycloak-realm.json"
    realm_mounts = [
        (name, v) for name, s in services.items() for v in service_volumes(s)
        if str(v.get("target", "")).startswith("/opt/keycloak/data/import")
    ]
    realm_name = None
    if not realm_mounts:
        fail("no service imports a Keycloak realm (/opt/keycloak/data/import)")
    for name, volume in realm_mounts:
        source = (compose_dir / str(volume.get("source"))).resolve()
        if source != realm_file.resolve():
            fail(f"{name}: imports {volume.get('source')}, not config/keycloak-realm.json")
        command = services[name].get("command") or []
        command = command.split() if isinstance(command, str) else command
        if "--import-realm" not in command:
            fail(f"{name}: mounts the realm but does not start with --import-realm")
    if realm_file.is_file():
        try:
            realm = json.loads(realm_file.read_text())
            realm_name = realm.get("realm")
            ok(f"Keycloak imports config/keycloak-realm.json (realm {realm_name!r})")
        except json.JSONDecodeError as error:
            fail(f"config/keycloak-realm.json is not JSON: {error}")
    else:
        fail("config/keycloak-realm.json does not exist")

    check_create_time(doc, services)
    check_profiles(services, env)
    check_env_example(args.env_file)
    check_service_config(compose_dir, root, services, realm_name, doc)
    check_clamd(compose_dir, root, services)
    return report()


def is_tool(service: dict) -> bool:
    """An on-demand tool (`docker compose run`), not part of the stack `up` starts."""
    return "tools" in (service.get("profiles") or [])


# Profiles that pick one of several interchangeable services: COMPOSE_PROFILES must name
# exactly one of each group.
PROFILE_GROUPS = {"S3 server": {"garage", "minio"}, "key service": {"openbao", "vault"}}


def alternatives(a: dict, b: dict) -> bool:
    """Two services that never run together: different profiles of one group."""
    pa, pb = set(a.get("profiles") or []), set(b.get("profiles") or [])
    return any(pa & g and pb & g and not pa & pb for g in PROFILE_GROUPS.values())


def check_profiles(services: dict, env: dict) -> None:
    before = len(FAILURES)
    defined = {p for s in services.values() for p in (s.get("profiles") or [])}
    chosen = {p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    for profile in sorted(chosen - defined):
        fail(f"COMPOSE_PROFILES names {profile!r}, which no service has")
    for what, group in PROFILE_GROUPS.items():
        missing = group - defined
        if missing:
            fail(f"{what}: no service has the profile(s) {', '.join(sorted(missing))}")
        picked = chosen & group
        if len(picked) != 1:
            fail(f"COMPOSE_PROFILES must pick exactly one {what} of {', '.join(sorted(group))}"
                 f" (it picks {', '.join(sorted(picked)) or 'none'})")
    if len(FAILURES) == before:
        ok(f"profiles: COMPOSE_PROFILES={','.join(sorted(chosen))} picks one of each"
           f" ({'; '.join(' or '.join(sorted(g)) for g in PROFILE_GROUPS.values())})")


def check_create_time(doc: dict, services: dict) -> None:
    """What `docker compose up` refuses while creating containers (see the module doc)."""
    before = len(FAILURES)
    definitions = {"secrets": doc.get("secrets") or {}, "configs": doc.get("configs") or {}}
    for name, service in services.items():
        read_only = str(service.get("read_only", "false")).lower() == "true"
        for kind, declared in definitions.items():
            for entry in service.get(kind) or []:
                source = entry if isinstance(entry, str) else entry.get("source")
                spec = declared.get(source) or {}
                from_file = "file" in spec
                if read_only and not from_file and not spec.get("external"):
                    origin = "environment" if "environment" in spec else "content"
                    fail(f"{name}: read_only service with {kind[:-1]} {source!r} from {origin}:"
                         " Compose >= 2.34 refuses to create it (docker/compose#12531);"
                         " mount it as a file")
                if from_file and isinstance(entry, dict) and any(k in entry for k in ("uid", "gid", "mode")):
                    fail(f"{name}: {kind[:-1]} {source!r} is a file: uid/gid/mode are ignored outside"
                         " Swarm (it keeps the host file's owner and mode)")
        network_mode = str(service.get("network_mode", ""))
        if network_mode.startswith(("service:", "container:")) and (service.get("ports") or service.get("networks")):
            fail(f"{name}: network_mode {network_mode} cannot be combined with ports or networks")
        # A required dependency on a service that runs only under a profile the dependent
        # does not share: `up` fails when that profile is not picked.
        own = set(service.get("profiles") or [])
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {} for d in depends}
        for target, spec in depends.items():
            theirs = set((services.get(target) or {}).get("profiles") or [])
            required = str((spec or {}).get("required", "true")).lower() == "true"
            if theirs and required and not (own and own <= theirs):
                fail(f"{name}: depends_on {target}, which runs only under profile(s)"
                     f" {', '.join(sorted(theirs))}; mark it `required: false`")
        replicas = (service.get("deploy") or {}).get("replicas", service.get("scale", 1))
        if service.get("container_name") and int(replicas or 1) > 1:
            fail(f"{name}: container_name on a service with {replicas} replicas")

    # Dependency cycles: Compose refuses to order them.
    graph = {
        name: list((s.get("depends_on") or {}).keys() if isinstance(s.get("depends_on"), dict)
                   else s.get("depends_on") or [])
        for name, s in services.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2 or node not in graph:
            return
        if state.get(node) == 1:
            cycle = trail[trail.index(node):] + [node]
            fail(f"depends_on cycle: {' -> '.join(cycle)}")
            return
        state[node] = 1
        for target in graph[node]:
            visit(target, trail + [node])
        state[node] = 2

    for name in graph:
        visit(name, [])

    built = {s.get("image") for s in services.values() if s.get("build") and s.get("image")}
    for name, service in services.items():
        if service.get("pull_policy") == "never" and not service.get("build") and service.get("image") not in built:
            fail(f"{name}: pull_policy never, but no service of this file builds {service.get('image')}")
    if len(FAILURES) == before:
        ok("create-time rules: no non-file secret in a read-only service, no ignored secret"
           " modes, no network_mode conflicts, no required dependency on another profile's service,"
           " no dependency cycles, every never-pulled image built here")


def check_dockerfile(path: Path) -> None:
    text = path.read_text()
    stages = re.split(r"(?im)^FROM\s", text)
    final = stages[-1] if len(stages) > 1 else ""
    if len(stages) < 3:
        fail(f"{path.name}: not a multi-stage build")
    users = re.findall(r"(?im)^USER\s+(\S+)", final)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail(f"{path.name}: the runtime stage does not switch to a non-root USER")
    if not re.search(r"(?im)^HEALTHCHECK\s", final):
        fail(f"{path.name}: the runtime stage has no HEALTHCHECK")
    if not re.search(r"cargo build[^\n]*--locked", text):
        fail(f"{path.name}: cargo build without --locked")
    if not re.search(r"(?m)^\s*COPY --from=", final):
        fail(f"{path.name}: the runtime stage copies nothing from the builder")
    else:
        ok(f"{path.name}: multi-stage, non-root USER, HEALTHCHECK, --locked build")


SECRETISH_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)(?!_FILE)(?:$|_)", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:([^@/\s]+)@")


def check_no_literal_secrets(raw: dict) -> None:
    found = []

    def visit(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (str, int)) and SECRETISH_ENV.search(str(key)) and not str(key).endswith("_FILE"):
                    if "${" not in str(value) and not str(value).startswith("/"):
                        found.append(f"{path}.{key}")
                visit(value, f"{path}.{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                visit(value, f"{path}[{n}]")
        elif isinstance(node, str):
            for password in URL_WITH_PASSWORD.findall(node):
                if "${" not in password:
                    found.append(f"{path} (URL with a literal password)")

    visit(raw, "compose")
    for where in found:
        fail(f"{where}: a literal secret; take it from the env file (${{VAR:?…}})")
    if not found:
        ok("no literal secrets: passwords, keys and tokens all come from the env file")


def check_env_example(path: Path) -> None:
    lines = path.read_text().splitlines()
    uncommented = []
    for n, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            previous = lines[n - 1].strip() if n else ""
            if not previous.startswith("#"):
                uncommented.append(line.split("=", 1)[0])
    for name in uncommented:
        fail(f"{path.name}: {name} has no comment saying what it is")
    if not uncommented:
        ok(f"{path.name}: every variable has a comment")


def check_service_config(compose_dir: Path, root: Path, services: dict, realm_name, doc) -> None:
    default_toml = root / "config" / "default.toml"
    if not default_toml.is_file():
        fail("config/default.toml not found (needed to check configuration keys)")
        return
    known = known_config_keys(default_toml)

    # The site file each loanfolio container reads (LOANFOLIO_CONFIG -> a bind mount).
    site_files = {}
    for name, service in services.items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) for e in environment if "=" in e)
        target = environment.get("LOANFOLIO_CONFIG")
        for key in environment:
            if key.startswith("LOANFOLIO__"):
                dotted = ".".join(part.lower() for part in key[len("LOANFOLIO__"):].split("__"))
                if dotted not in known:
                    fail(f"{name}: {key} sets {dotted}, a key config/default.toml does not know"
                         " (the service refuses unknown keys)")
        if target:
            for volume in service_volumes(service):
                if volume.get("target") == target and volume.get("type") == "bind":
                    site_files[(compose_dir / volume["source"]).resolve()] = name
            if not any(v.get("target") == target for v in service_volumes(service)):
                fail(f"{name}: LOANFOLIO_CONFIG={target} but nothing is mounted there")
    if not site_files:
        fail("no loanfolio service reads a site configuration file (LOANFOLIO_CONFIG)")
    for path in site_files:
        try:
            site = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            fail(f"{path.name}: not valid TOML: {error}")
            continue
        bad = False
        for dotted, value in flatten_toml(site):
            if dotted not in known:
                fail(f"{path.name}: unknown key {dotted} (the service refuses unknown keys)")
                bad = True
            if dotted in SECRET_KEYS and value is not None:
                fail(f"{path.name}: {dotted} is a secret: use {dotted.rsplit('.', 1)[-1]}_file")
                bad = True
        issuer = site.get("oidc", {}).get("issuer_url", "")
        if realm_name and not issuer.rstrip("/").endswith(f"/realms/{realm_name}"):
            fail(f"{path.name}: oidc.issuer_url {issuer!r} is not the realm {realm_name!r}")
            bad = True
        hostnames = [
            (s.get("environment") or {}).get("KC_HOSTNAME") for s in services.values()
            if isinstance(s.get("environment"), dict) and "KC_HOSTNAME" in s["environment"]
        ]
        for hostname in hostnames:
            if not issuer.startswith(hostname.rstrip("/") + "/"):
                fail(f"{path.name}: oidc.issuer_url {issuer!r} is not under Keycloak's KC_HOSTNAME {hostname!r}")
                bad = True
        if site.get("kms", {}).get("provider") != "vault":
            fail(f"{path.name}: kms.provider is not vault")
            bad = True
        if not bad:
            ok(f"{path.name}: every key known to config/default.toml, secrets only as *_file,"
               " issuer = the realm, kms = vault")

    # The image's own LOANFOLIO__ defaults (ENV in the Dockerfile).
    for service in services.values():
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = compose_dir / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if dockerfile.is_file():
                for key in re.findall(r"\b(LOANFOLIO__[A-Z0-9_]+)=", dockerfile.read_text()):
                    dotted = ".".join(p.lower() for p in key[len("LOANFOLIO__"):].split("__"))
                    if dotted not in known:
                        fail(f"{dockerfile.name}: ENV {key} sets unknown key {dotted}")


def check_clamd(compose_dir: Path, root: Path, services: dict) -> None:
    default = tomllib.loads((root / "config" / "default.toml").read_text())
    limit = default.get("documents", {}).get("max_upload_bytes")
    confs = [
        (name, compose_dir / v["source"]) for name, s in services.items() for v in service_volumes(s)
        if v.get("target") == "/etc/clamav/clamd.conf" and v.get("type") == "bind"
    ]
    if not confs:
        fail("no service mounts a clamd.conf at /etc/clamav/clamd.conf")
        return
    for name, path in confs:
        if not path.is_file():
            continue  # reported with the mounts
        settings = {}
        for line in path.read_text().splitlines():
            parts = line.split(None, 1)
            if parts and not parts[0].startswith("#") and len(parts) == 2:
                settings[parts[0]] = parts[1].strip()
        bad = False
        for key in ("StreamMaxLength", "MaxFileSize", "MaxScanSize"):
            try:
                size = parse_size(settings[key])
            except (KeyError, ValueError):
                fail(f"{name}: clamd.conf has no usable {key}")
                bad = True
                continue
            if limit is not None and size < limit:
                fail(f"{name}: clamd.conf {key} {settings[key]} < documents.max_upload_bytes {limit}")
                bad = True
        if settings.get("AlertExceedsMax", "").lower() != "yes":
            fail(f"{name}: clamd.conf must set AlertExceedsMax yes (else clamd passes what it did not read)")
            bad = True
        if not bad:
            ok(f"{name}: clamd limits >= the upload limit ({limit} bytes), AlertExceedsMax yes")


def report() -> int:
    if FAILURES:
        print(f"compose check: {len(FAILURES)} problem(s)", file=sys.stderr)
        return 1
    print("compose check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
