"""Azure-style settings: Key=Value arguments, ``__`` environment variables, and the CLI's answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from speech_recognizer import contract as c
from speech_recognizer.settings import KNOWN, SettingsError, parse, require_eula
from tests.doc_tables import README, assert_generated
from tests.doc_tables import one_line as joined

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m speech_recognizer`` with a clean environment (no inherited Eula/ApiKey)."""
    base = {k: v for k, v in os.environ.items() if k.split("_")[0].lower() not in {"eula", "apikey", "billing", "locale"}}
    return subprocess.run(
        [sys.executable, "-m", "speech_recognizer", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def capacity(count: int, cores: int, memory: int | None, base_mib: int = 576, given: bool = False) -> tuple[str, str | None]:
    """settings.decoder_capacity of ``cores`` and a ``memory`` limit as a cgroup gives them (its quota, its limit)."""
    from speech_recognizer.settings import Resources, decoder_capacity

    made = Resources(cores, memory, "the cgroup's quota", "" if memory is None else "the cgroup's")
    return decoder_capacity(count, made, base_mib, given)


def test_azure_arguments_exactly_as_documented() -> None:
    s = parse(
        ["Eula=accept", "Billing=https://westus.api.cognitive.microsoft.com/", "ApiKey=abc123", "Mounts:License=/license", "Mounts:Output=/out"],
        environ={},
    )
    assert s.eula_accepted
    assert s.billing == "https://westus.api.cognitive.microsoft.com/"
    assert s.api_key == "abc123"
    assert s.license_dir == Path("/license")
    assert s.output_dir == Path("/out")
    require_eula(s)


def test_keys_are_case_insensitive() -> None:
    s = parse(["eula=accept", "billing=https://b", "apikey=k", "mounts:output=/o", "LOCALE=ko-KR"], environ={})
    assert (s.eula_accepted, s.billing, s.api_key, s.output_dir, s.locales) == (True, "https://b", "k", Path("/o"), ("ko-KR",))
    assert parse(["Eula=ACCEPT"], environ={}).eula_accepted


def test_value_may_hold_equals_and_colons() -> None:
    s = parse(["ApiKey=a=b=c", "Billing=https://host:443/x?y=1"], environ={})
    assert s.api_key == "a=b=c" and s.billing == "https://host:443/x?y=1"


def test_logging_level() -> None:
    assert parse(["Logging:Console:LogLevel:Default=Debug"], environ={}).log_level == "DEBUG"
    assert parse([], environ={"Logging__Console__LogLevel__Default": "Warning"}).log_level == "WARNING"
    assert parse([], environ={}).log_level == "INFO"
    with pytest.raises(SettingsError, match="Trace, Debug"):
        parse(["Logging:Console:LogLevel:Default=Loud"], environ={})


def test_environment_with_double_underscore() -> None:
    s = parse([], environ={"Mounts__Output": "/env-out", "DECODER_MAX_COUNT": "3", "Eula": "accept", "Mounts__Models": "/m"})
    assert s.output_dir == Path("/env-out")
    assert s.decoder_max_count == 3
    assert s.eula_accepted
    assert s.models_dir == Path("/m")
    assert parse([], environ={"DecoderMaxCount": "5"}).decoder_max_count == 5
    assert parse([], environ={"mounts__output": "/lower"}).output_dir == Path("/lower")


def test_arguments_override_the_environment() -> None:
    s = parse(["Mounts:Output=/arg", "DecoderMaxCount=2"], environ={"Mounts__Output": "/env", "DECODER_MAX_COUNT": "7"})
    assert s.output_dir == Path("/arg") and s.decoder_max_count == 2


def test_unrelated_environment_is_ignored_silently() -> None:
    s = parse([], environ={"PATH": "/bin", "HOME": "/root", "KUBERNETES_SERVICE_PORT": "443"})
    assert s.warnings == ()


@pytest.mark.parametrize(
    ("arg", "nearest"),
    [("Eulla=accept", "Eula"), ("Mounts:Outptu=/o", "Mounts:Output"), ("DecoderMaxCnt=2", "DecoderMaxCount"), ("ApiKye=k", "ApiKey")],
)
def test_unknown_key_warns_with_the_nearest_known_key(arg: str, nearest: str) -> None:
    s = parse(["Eula=accept", arg], environ={})
    assert len(s.warnings) == 1
    assert arg.split("=")[0] in s.warnings[0] and f"did you mean {nearest}?" in s.warnings[0]


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        ("DecoderMaxCount=many", "not a number"),
        ("DecoderMaxCount=0", "greater than 0"),
        ("DecoderMaxCount=-2", "greater than 0"),
        ("MaxAudioSeconds=inf", "finite"),
        ("MaxAudioSeconds=nan", "finite"),
        ("Port=http", "not a number"),
        ("Port=70000", "at most 65535"),
        ("Logging:Disk:MaxFileSize=big", "not a number"),
    ],
)
def test_bad_numbers_are_one_line_errors(arg: str, words: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse(["Eula=accept", arg], environ={})
    message = str(info.value)
    assert words in message and arg.split("=")[0] in message and "\n" not in message


def test_not_key_value() -> None:
    with pytest.raises(SettingsError, match="not Key=Value"):
        parse(["accept"], environ={})


def test_eula_required() -> None:
    with pytest.raises(SettingsError, match="Eula=accept"):
        require_eula(parse(["Eula=decline"], environ={}))


def test_cli_without_eula_exits_with_one_line() -> None:
    r = run_cli("Billing=https://b", "ApiKey=k")
    assert r.returncode != 0
    assert "Eula=accept" in one_line(r.stderr)


def test_cli_bad_number_exits_with_one_line() -> None:
    r = run_cli("Eula=accept", "DecoderMaxCount=lots")
    assert r.returncode != 0
    assert "DecoderMaxCount" in one_line(r.stderr)


def test_cli_bad_locale_exits_with_one_line(tmp_path: Path) -> None:
    r = run_cli("Eula=accept", "Locale=not a locale!", f"Mounts:Models={tmp_path}")
    assert r.returncode != 0
    assert "not a locale" in one_line(r.stderr)


def test_cli_help_lists_every_setting() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    for setting in KNOWN:
        assert setting.key in r.stdout, setting.key
    assert "__" in r.stdout and c.env_name(c.MOUNTS_OUTPUT) in r.stdout


def test_cli_download_license_exits_zero_with_a_message() -> None:
    r = run_cli("eula=accept", "billing=https://b", "apikey=k", "DownloadLicense=True", "Mounts:License=/license")
    assert r.returncode == 0, r.stderr
    assert "license" in r.stdout.lower()


def test_cpu_count_follows_the_container_cpu_limit(tmp_path: Path) -> None:
    from speech_recognizer.settings import cgroup_cpu_limit

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 2, "1.5 CPUs round up"
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 4
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None



def test_memory_limit_is_read_from_the_container_cgroup(tmp_path: Path) -> None:
    """cgroup v2's ``memory.max`` and v1's ``memory/memory.limit_in_bytes``, each with its way of saying "none"; a
    missing, unreadable or garbled file is no limit, never a crash at start-up."""
    from speech_recognizer.settings import cgroup_memory_limit

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("3221225472\n")
    assert cgroup_memory_limit(v2) == 3 * 2**30
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    assert cgroup_memory_limit(v1) == 2 * 2**30
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's own "no limit" (4 KiB pages)
    assert cgroup_memory_limit(v1) is None
    assert cgroup_memory_limit(tmp_path / "none") is None
    for garbage in ("", "lots\n", "-1\n", "0\n", "1.5G\n", "\x00\xff"):
        (v2 / "memory.max").write_text(garbage)
        assert cgroup_memory_limit(v2) is None, repr(garbage)
    (v2 / "memory.max").unlink()
    (v2 / "memory.max").mkdir()  # unreadable: a directory
    assert cgroup_memory_limit(v2) is None


def test_default_decoders_are_what_the_cores_and_the_memory_limit_hold() -> None:
    """3 per core, at most what the memory limit holds, at least 1. The SpeechToText's default pod (2 CPUs, 3Gi) keeps
    its 6; 4 CPUs in 3Gi get what 3Gi holds, not 12 (six streams of varied speech took a server to 2497 MiB, so
    twelve would be OOM-killed); a SpeechToText stored with the 2Gi of before gets what 2Gi holds; 1Gi holds one."""
    from speech_recognizer.settings import BASE_MIB, DECODER_MIB, default_decoders

    gib = 2**30
    assert default_decoders(2, 3 * gib) == 6
    assert default_decoders(4, 3 * gib) == 6
    assert default_decoders(2, 2 * gib) == 3
    assert default_decoders(2, 1 * gib) == 1
    assert default_decoders(2, 256 * 2**20) == 1, "the floor: a server with no decoder would refuse everything"
    assert default_decoders(2, None) == 6 and default_decoders(4, None) == 12 and default_decoders(1, None) == 3
    assert default_decoders(8, 8 * gib) == 19
    assert BASE_MIB + 6 * DECODER_MIB >= 2497, "the budget holds the six varied streams measured (bench/notes.md, Memory)"


def test_default_decoders_stop_at_the_cap_on_a_node_of_any_size(tmp_path: Path) -> None:
    """3 per core, at most :data:`MAX_DEFAULT_DECODERS` (64) whatever the cores and the memory limit: what the operator
    sizes a pod's /tmp for when its limits bound neither (tests/operator/test_pod_disk.py runs the emitted limits);
    ``cores`` None (a pod without a CPU limit, its node not yet known) is the cap. The CPUs counted are those the
    process may run on, capped by its cgroup's CPU quota, rounded up; the start-up line says the cap. Before: 96 on
    32 cores without a limit, 80 in a 32Gi memory limit, in a pod whose /tmp was sized for 64."""
    from speech_recognizer.settings import MAX_DEFAULT_DECODERS, container_resources, default_decoders

    gib = 2**30
    assert MAX_DEFAULT_DECODERS == 64
    assert default_decoders(21, None) == 63 and default_decoders(22, None) == 64 and default_decoders(32, None) == 64
    assert default_decoders(32, 32 * gib) == 64 and default_decoders(32, 8 * gib) == 19
    assert default_decoders(None, None) == 64 and default_decoders(None, 2 * gib) == 3
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("max 100000\n")
    (cgroup / "memory.max").write_text("max\n")
    assert container_resources(root=cgroup, affinity=32).decoders() == 64 and container_resources(root=cgroup, affinity=2).decoders() == 6
    (cgroup / "cpu.max").write_text("150000 100000\n")  # the kubelet's quota of limits.cpu 1500m
    assert container_resources(root=cgroup, affinity=32).decoders() == 6 and container_resources(root=cgroup, affinity=1).decoders() == 3
    assert capacity(64, 32, None) == ("64 decoders (3 × 32 cores: 96, at most 64; no memory limit; cores: the cgroup's quota)", None)


def cgroup_of(tmp_path: Path, quota: str, memory: str | None) -> Path:
    """A container's cgroup v2 files as a runtime gives them: ``cpu.max``'s quota (``max``: none) and ``memory.max``
    (None: no such file, as where the container cannot read its memory cgroup)."""
    cgroup = tmp_path / f"cgroup-{quota}-{memory}"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text(f"{quota} 100000\n")
    if memory is not None:
        (cgroup / "memory.max").write_text(f"{memory}\n")
    return cgroup


def test_the_default_decoders_count_the_least_of_the_cgroup_and_the_limits_the_pod_passes(tmp_path: Path) -> None:
    """The default ``DecoderMaxCount`` counts the least of what the cgroup says (its CPUs and CFS quota, its memory
    limit) and what the container was told of its limits (``Container:CpuLimitMillicores``, rounded up to whole CPUs
    as the operator rounds ``limits.cpu``, and ``Container:MemoryLimitBytes``): a kubelet that does not enforce the
    CPU limit (``--cpu-cfs-quota=false``: no quota) or a memory cgroup the container cannot read no longer has a pod
    of ``limits.cpu: 2, memory: 8Gi`` on 32 CPUs run 19 decoders in a /tmp sized for the 6 the operator counts
    (speech_operator.builders.pod_decoders). Either source alone, or neither, counts as before (a ``docker run``
    without them behaves as it did); the start-up line says where the cores and the memory limit came from."""
    from speech_recognizer.settings import cgroup_cpu_limit, cgroup_memory_limit, container_resources, default_decoders

    gib, told = 2**30, {"cpu_millicores": 2000, "memory_bytes": 8 * 2**30}
    unenforced = cgroup_of(tmp_path, "max", str(8 * gib))
    assert container_resources(root=unenforced, affinity=32).decoders() == 19, "the cgroup alone: the node's 32 CPUs"
    assert container_resources(root=unenforced, affinity=32, **told).decoders() == 6 == default_decoders(2, 8 * gib)
    resources = container_resources(2000, 8 * gib, unenforced, affinity=32)
    assert resources.cores_from == "Container:CpuLimitMillicores=2000 (CPUs to run on: 32; no CPU quota in the cgroup)"
    assert resources.memory_from == "the cgroup's and Container:MemoryLimitBytes=8589934592"
    unreadable = cgroup_of(tmp_path, "400000", None)  # 4 CPUs enforced; the memory cgroup not seen
    assert container_resources(root=unreadable, affinity=32).decoders() == 12, "the cgroup alone: no memory limit"
    assert container_resources(root=unreadable, affinity=32, cpu_millicores=4000, memory_bytes=2 * gib).decoders() == 3
    assert container_resources(4000, 2 * gib, unreadable, 32).memory_from == "Container:MemoryLimitBytes=2147483648 (none in the cgroup)"
    # the least wins, whichever says it: a cgroup stricter than what the container was told counts
    strict = cgroup_of(tmp_path, "150000", str(3 * gib))
    assert container_resources(root=strict, affinity=32, cpu_millicores=4000, memory_bytes=8 * gib).decoders() == 6
    assert container_resources(4000, 8 * gib, strict, 32).cores_from == (
        "the cgroup's quota (CPUs to run on: 32; Container:CpuLimitMillicores=4000: 4)")
    assert container_resources(root=strict, affinity=1, cpu_millicores=4000).decoders() == 3, "a node (or cpuset) of fewer CPUs"
    # millicores round up as the operator rounds limits.cpu; the node's allocatable (no limit set) bounds as well
    for millicores, cores in ((1, 1), (999, 1), (1000, 1), (1001, 2), (1500, 2), (48000, 48)):
        assert container_resources(millicores, None, unenforced, 64).cores == cores, millicores
    assert container_resources(root=cgroup_of(tmp_path, "max", "max"), affinity=32, cpu_millicores=32000,
                              memory_bytes=128 * gib).decoders() == 64 == default_decoders(None, None)
    # neither told: the cgroup's figures exactly as before
    for cgroup in (unenforced, unreadable, strict, tmp_path / "none"):
        for affinity in (1, 2, 32):
            assert container_resources(root=cgroup, affinity=affinity).decoders() == default_decoders(
                min(affinity, cgroup_cpu_limit(cgroup) or affinity), cgroup_memory_limit(cgroup)), (cgroup, affinity)


def test_the_limits_a_pod_passes_are_settings_and_set_the_default_decoders() -> None:
    """``Container:CpuLimitMillicores`` and ``Container:MemoryLimitBytes`` are settings (arguments, or the environment
    the operator's pods set by the downward API: ``Container__CpuLimitMillicores``): the default ``DecoderMaxCount``
    and ``Warmup:Count`` count them with this process's own cgroup; an explicit ``DecoderMaxCount`` is kept. Without
    them the default is the cgroup's alone."""
    from speech_recognizer.settings import container_resources, default_decoders

    plain = parse([], environ={})
    assert (plain.container_cpu_millicores, plain.container_memory_bytes) == (None, None)
    assert plain.decoder_max_count == container_resources().decoders()
    one = parse([], environ={"Container__CpuLimitMillicores": "1000", "Container__MemoryLimitBytes": str(2**31)})
    assert (one.container_cpu_millicores, one.container_memory_bytes) == (1000, 2**31)
    assert one.resources().cores == 1 and one.decoder_max_count == default_decoders(1, one.resources().memory_limit) <= 3
    assert one.warmup_recognizers == one.decoder_max_count
    assert parse(["Container:CpuLimitMillicores=1000", "DecoderMaxCount=9"], environ={}).decoder_max_count == 9


@pytest.mark.parametrize("raw, words", [("2k", "is not a number"), ("1.5", "is not a number"), ("0", "greater than 0"),
                                        ("-1000", "greater than 0"), ("max", "is not a number")])
def test_a_bad_limit_the_pod_passes_is_a_one_line_error_at_start_up(raw: str, words: str) -> None:
    """A malformed ``Container:CpuLimitMillicores`` or ``Container:MemoryLimitBytes`` stops the start with one line
    naming it, as any malformed setting does: the operator's pods never pass one (the kubelet writes whole numbers),
    so one is a hand-written deployment's mistake, and ignoring it would size the decoders as if it were not there,
    past the /tmp made for them."""
    for key in (c.CONTAINER_CPU_LIMIT, c.CONTAINER_MEMORY_LIMIT):
        with pytest.raises(SettingsError) as info:
            parse([], environ={c.env_name(key): raw})
        assert str(info.value) == f"{key}={raw!r} " + ("must be " if "greater" in words else "") + words, info.value
    r = run_cli("Eula=accept", env={c.env_name(c.CONTAINER_CPU_LIMIT): "2k"})
    assert r.returncode != 0 and c.CONTAINER_CPU_LIMIT in one_line(r.stderr)


def test_the_start_up_line_says_the_decoders_and_warns_past_the_memory_limit() -> None:
    """The start-up log says how many decoders and what cores and memory hold; an explicit ``DecoderMaxCount`` past
    what the memory holds is obeyed with one warning that says the risk and the way out."""
    gib = 2**30
    line, warning = capacity(6, 2, 3 * gib)
    assert line == ("6 decoders (3 × 2 cores: 6; the 3072 MiB memory limit holds 6 at 400 MiB each beyond 576 MiB; cores: the "
                    "cgroup's quota; memory limit: the cgroup's)")
    assert warning is None
    assert capacity(6, 2, None) == ("6 decoders (3 × 2 cores: 6; no memory limit; cores: the cgroup's quota)", None)
    line, warning = capacity(12, 4, 3 * gib)
    assert line.startswith("12 decoders (3 × 4 cores: 12; the 3072 MiB memory limit holds 6 ")
    assert warning is not None and warning.startswith("DecoderMaxCount=12 is more than the 3072 MiB memory limit holds (6)")
    assert "OOM-killed" in warning and "5376 MiB" in warning
    line, warning = capacity(1, 2, 700 * 2**20)  # the floor: not even one fits
    assert line.startswith("1 decoder (") and warning is not None and "holds (0)" in warning
    line, warning = capacity(12, 4, None, given=True)
    assert line == "12 decoders (DecoderMaxCount given; 3 × 4 cores: 12; no memory limit; cores: the cgroup's quota)"

def test_the_memory_base_is_what_the_loaded_models_take_at_least_the_small_ko_kr_models() -> None:
    """The decoders come on top of what the process holds once its models are loaded, never less than
    :data:`BASE_MIB` (the small ko-KR model's figure, beside which the budget per decoder was measured): one ko-KR
    locale (~557 MiB with glibc's malloc, ~516 with jemalloc) keeps every figure above; two locales of it (~1050 MiB)
    or a larger model leave fewer decoders in the same limit, and an explicit ``DecoderMaxCount`` past that is warned
    of with the measured figures. Before, the base was 576 MiB whatever was loaded: 6 decoders in 3Gi beside two
    locales, and no warning for 6 given."""
    from speech_recognizer.settings import BASE_MIB, default_decoders, memory_base_mib

    gib, mib = 2**30, 2**20
    assert memory_base_mib(None) == BASE_MIB and memory_base_mib(557 * mib) == BASE_MIB == 576
    assert memory_base_mib(1050 * mib) == memory_base_mib(1051 * mib - 1) == 1050
    assert default_decoders(2, 3 * gib, memory_base_mib(557 * mib)) == 6
    assert default_decoders(2, 3 * gib, memory_base_mib(1050 * mib)) == 5
    assert default_decoders(2, 2 * gib, 1050) == 2 and default_decoders(2, 2 * gib, 576) == 3
    assert default_decoders(2, 3 * gib, 3000) == 1, "the floor holds beside a model that takes most of the limit"
    assert default_decoders(2, None, 4000) == 6, "no memory limit: the cores alone"
    line, warning = capacity(5, 2, 3 * gib, 1050)
    assert line.startswith("5 decoders (3 × 2 cores: 6; the 3072 MiB memory limit holds 5 at 400 MiB each beyond 1050 MiB;")
    assert warning is None
    line, warning = capacity(6, 2, 3 * gib, 1050)
    assert warning is not None and warning.startswith("DecoderMaxCount=6 is more than the 3072 MiB memory limit holds (5)")
    assert "raise the memory limit to 3450 MiB" in warning, warning


def test_resident_memory_is_read_from_proc_and_never_crashes(tmp_path: Path) -> None:
    """The process's resident set from ``/proc/self/statm`` (pages): this process's is within what it could hold; a
    missing or garbled file is no measurement (the base is then :data:`BASE_MIB`), never a crash at start-up."""
    from speech_recognizer.settings import resident_bytes

    held = resident_bytes()
    assert held is not None and 10 * 2**20 < held < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    statm = tmp_path / "statm"
    statm.write_text("1000 300 20 1 0 500 0\n")
    assert resident_bytes(statm) == 300 * os.sysconf("SC_PAGE_SIZE")
    for garbage in ("", "1000\n", "a b c\n"):
        statm.write_text(garbage)
        assert resident_bytes(statm) is None, repr(garbage)
    assert resident_bytes(tmp_path / "none") is None


# ---- each setting declared once (issue 16, design) -------------------------------------------------


def markdown_table() -> str:
    """README's settings table."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for s in KNOWN:
        key = f"`{s.key}`" + (f" (env also `{'`, `'.join(s.aliases)}`)" if s.aliases else "")
        default = s.shown if s.shown in ("—",) or "`" in s.shown or " " in s.shown else f"`{s.shown}`"
        rows.append(f"| {key} | {default} | {s.help} |")
    return "\n".join(rows)



def test_readme_settings_table_is_the_declared_one() -> None:
    """README's table is what the declarations give (:func:`markdown_table`), as ``--help`` is."""
    assert_generated(markdown_table(), README, "settings table (the declarations in settings.py)")


@pytest.mark.parametrize("setting", [s for s in KNOWN if s.shown.strip("`") and " " not in s.shown and s.shown != "—"], ids=lambda s: s.key)
def test_the_default_the_docs_show_is_the_default(setting) -> None:
    """Each default is written once: the value the docs show parses to the value a server gets without the setting."""
    default = getattr(parse([], environ={}), setting.name)
    assert getattr(parse([f"{setting.key}={setting.shown.strip('`')}"], environ={}), setting.name) == default


@pytest.mark.parametrize(("raw", "value"), [*((t, True) for t in ("true", "True", "1", "yes", "ON")), *((f, False) for f in ("false", "0", "no", "Off"))])
def test_one_boolean_parser_for_settings_and_every_route(raw: str, value: bool) -> None:
    """``wordLevelTimestamps=1`` was true over the Speech SDK route and false over REST; three parsers took
    different spellings. Now settings, REST and the SDK's query read booleans alike."""
    from speech_recognizer.settings import flag
    from speech_recognizer.usp.options import Options

    assert parse([f"DownloadModel={raw}"], environ={}).download_model is value
    assert flag({"wordLevelTimestamps": raw}, "wordLevelTimestamps") is value
    assert Options.from_query("conversation", {"wordLevelTimestamps": raw}).word_timings is value


def test_a_value_that_is_not_a_boolean_is_refused_with_its_name() -> None:
    from speech_recognizer.errors import BadValue
    from speech_recognizer.settings import flag
    from speech_recognizer.usp.options import Options

    with pytest.raises(SettingsError, match="DownloadModel"):
        parse(["DownloadModel=maybe"], environ={})
    with pytest.raises(BadValue, match="wordLevelTimestamps"):
        flag({"wordLevelTimestamps": "maybe"}, "wordLevelTimestamps")
    with pytest.raises(BadValue, match="wordlevelconfidence"):
        Options.from_query("conversation", {"wordLevelConfidence": "sure"})


#: How the README writes a number of bytes.
_UNITS = {"KiB": 1024, "MiB": 1024 * 1024}


def test_readme_quotes_each_setting_at_its_declared_default() -> None:
    """Wherever a README quotes a setting with a number, "`MaxAudioSeconds` (60 s)", "`Http:MaxHeaderBytes` (16 KiB)",
    "`Drain:Seconds` (default 30)", "`ConnectionIdleSeconds`, 300 s", the number is its declared default; a sum,
    "`MaxAudioSeconds` + `Http:BodyTimeoutSeconds` (70 s", the sum of theirs."""
    default = {key: getattr(parse([], environ={}), s.name) for s in KNOWN for key in (s.key, *s.aliases)}
    quoted = []
    for doc in (README, README.parent / "charts" / "speech-operator" / "README.md", README.parent / "deploy" / "README.md"):
        text = joined(doc.read_text())
        for terms, key, number, unit in re.findall(r"((?:`[A-Za-z_:]+` \+ )*)`([A-Za-z_:]+)`,? \((?:default )?(\d[\d,]*)(?: ?(s|MB|KiB|MiB)\b)?", text):
            names = [*re.findall(r"`([A-Za-z_:]+)`", terms), key]
            if all(n in default for n in names):
                quoted.append(key)
                value = int(number.replace(",", "")) * _UNITS.get(unit, 1)
                assert value == sum(default[n] for n in names), f"{doc.name} says {' + '.join(names)} ({number} {unit}); declared: {[default[n] for n in names]}"
        for key, number in re.findall(r"`([A-Za-z_:]+)`, (\d+) s\b", text):
            if key in default:
                quoted.append(key)
                assert int(number) == default[key], f"{doc.name} says {key}, {number} s; declared: {default[key]}"
    assert len(quoted) >= 10, f"the pattern no longer finds the README's quoted defaults: {quoted}"
