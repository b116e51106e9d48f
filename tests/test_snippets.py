"""Every command and snippet of README.md, and of the recognizer's home page, run as written (see
tests/snippets.py for how, and for the README's markers of what cannot run here).

The README's blocks are tests of their own, in the README's order, sharing one working folder as a
user following the README shares one machine: ``hello.wav`` made by one block is read by the next.
They run against one recognizer, started with the settings of the README's own command on the
session's model (tests/conftest.py), at ``localhost:5000``'s place; a block that starts it with those settings and more
(the setting its section is about) runs its next commands against a recognizer of its own, started with them. What needs a cluster, Docker or the
network is marked in the README and checked statically (``-s`` prints the list and why).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import tempfile
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from speech_operator import crd as crd_module
from speech_operator.cli import parse as operator_args
from speech_recognizer import contract
from speech_recognizer.app import create_app
from speech_recognizer.models import CATALOG, ModelRegistry
from speech_recognizer.settings import parse as recognizer_settings

from . import snippets as s
from .conftest import make_settings
from .jssdk.node import MODULES as NODE_MODULES
from .ship import lock, tools
from .ship.conftest import CHART, crd_schemas, load_docs, run, validate_manifests
from .support import Reference, ServerThread

BLOCKS = s.blocks(s.README.read_text())
KEY = "local-key"  # the README's ApiKey
#: The quick start's answer as the docs quote it, compared with the quick start's own ``format=detailed`` answer (text
#: only). Stable: espeak-ng writes the same samples every run, the server's resampler adds no dither, and the same
#: samples decode to the same words whichever recognizer of the warm pool a request gets (docs/engine.md, "Warm
#: recognizers"); a warm recognizer's confidences and times can differ a little, so no number is compared.
#: README's ``DisplayText``, the answer's text written for people:
EXPECTED_TEXT = re.search(r'the answer says\s+`"DisplayText": "([^"]+)"`', s.README.read_text()).group(1)  # type: ignore[union-attr]
#: docs/engine.md's ``Lexical`` (the model's own tokens, ``[9]`` included: what the written forms are built from).
ENGINE_MD = s.ROOT / "docs" / "engine.md"
EXPECTED_LEXICAL = re.search(r'comes back as\s+`([^`]+)`\s+\(the `Lexical` of the README\'s quick start', ENGINE_MD.read_text()).group(1)  # type: ignore[union-attr]


def starts(block: s.Block) -> list[s.Command]:
    prefixes, _ = block.not_run
    return [c for c in s.commands(block.text) if s.is_server_start(c) and not any(c.starts_with(p) for p in prefixes)]


#: The settings the README starts its server with (its first such command; every other must match).
SERVER_ARGS = s.server_args(next(c for b in BLOCKS if b.lang == "sh" for c in starts(b)))


@pytest.fixture(scope="module")
def readme_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The README's recognizer: its settings, on the session's model (test folders for its mounts,
    no start-up warm-up: tests/recognizer/test_warmup.py covers that)."""
    with ServerThread(create_app(make_settings(tmp_path_factory.mktemp("readme-server"), *SERVER_ARGS), registry)) as srv:
        yield srv


@pytest.fixture(scope="module")
def shell(readme_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> s.Shell:
    return s.Shell(tmp_path_factory.mktemp("readme"), f"127.0.0.1:{readme_server.port}")


# ---- static checks of what cannot run here ----------------------------------------------------------
def extras_exist(command: s.Command, ctx: s.Context) -> None:
    """``pip install -e '.[a,b]'``: the extras are the project's (the suite runs with them installed)."""
    words = command.words
    declared = tomllib.loads((s.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for target in words[2:]:
        if target.startswith(".["):
            for extra in target[2:-1].split(","):
                assert extra in declared, f"{command.text}: no extra {extra!r} in pyproject.toml"
        elif target not in ("-e", "-q"):
            raise AssertionError(f"{command.text}: installs {target!r}, which this check does not know")


def ci_runs_the_test_command(command: s.Command, ctx: s.Context) -> None:
    """``bash .ci/run``: it exists and ends with the README's test command (tests/ship/test_lint.py
    checks each of its steps)."""
    script = (s.ROOT / ".ci/run").read_text().splitlines()
    assert script[0].startswith("#!") and script[-1] == "python3 -m pytest"


def recognizer_arguments(command: s.Command, ctx: s.Context) -> None:
    """The recognizer's arguments parse; a model to download is in the catalog."""
    words = command.words
    args = words[3:] if words[0] == "python" else words[1:]
    settings = recognizer_settings(args, environ={})
    if settings.download_model:
        assert settings.locales and set(settings.locales) <= set(CATALOG), f"{command.text}: no catalog model for {settings.locales}"


def helm_renders(command: s.Command, ctx: s.Context) -> None:
    """``helm install NAME CHART ARGS``: ``helm template`` with the same arguments renders valid
    objects, with helm v3 and v4 and nothing on stderr."""
    words = command.words
    assert words[:2] == ["helm", "install"], command.text
    args = [w for w in words[2:] if w != "--create-namespace"]
    assert args[1] == "charts/speech-operator" and (s.ROOT / args[1]).resolve() == CHART
    for major in (3, 4):
        proc = run([tools.helm(major), "template", *args])
        assert proc.stderr == "", proc.stderr
        validate_manifests(load_docs(proc.stdout))


def kubectl_checked(command: s.Command, ctx: s.Context) -> None:
    """kubectl against a cluster: ``apply`` validates what it would apply; other verbs accept their
    flags (``kubectl VERB --help``) and name objects the README creates."""
    words = [w for w in command.words]
    namespace_flags = [i for i, w in enumerate(words) if w in ("-n", "--namespace")]
    for i in reversed(namespace_flags):
        del words[i : i + 2]
    verb, rest = words[1], words[2:]
    kubectl = str(tools.kubectl())
    if verb == "apply":
        if "-k" in rest:
            docs = load_docs(run([kubectl, "kustomize", rest[rest.index("-k") + 1]]).stdout)
        elif rest[rest.index("-f") + 1] == "-":
            assert command.heredoc is not None, command.text
            docs = load_docs(command.heredoc)
        else:
            docs = load_docs((s.ROOT / rest[rest.index("-f") + 1]).read_text())
        validate_manifests(docs)
        for doc in docs:
            ctx.created[f"{doc['kind'].lower()}/{doc['metadata']['name']}"] = doc
        return
    if verb == "create" and rest and not rest[0].startswith("-"):  # kubectl create configmap NAME ...: its own flags
        usage = run([kubectl, verb, rest[0], "--help"]).stdout
        ctx.created[f"{rest[0]}/{rest[1]}"] = {"kind": rest[0], "metadata": {"name": rest[1]}}
    else:
        usage = run([kubectl, verb, "--help"]).stdout
    for flag in (w.split("=")[0] for w in rest if w.startswith("--")):
        # the whole flag: "--from-fil" is in the usage text as a part of "--from-file"
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage), f"{command.text}: kubectl {verb} has no {flag}"
    named = manifests_named(rest)  # `kubectl delete -k deploy/`: what it names builds, and is no object's kind/name
    known = dict(ctx.created)
    for docs in (load_docs(run([kubectl, "kustomize", "deploy"]).stdout),):
        known.update({f"{d['kind'].lower()}/{d['metadata']['name']}": d for d in docs})
    for target in (w for w in rest if "/" in w and not w.startswith("-") and w not in named):
        kind, name = target.split("/", 1)
        kind = {"stt": "speechtotext", "svc": "service", "speechtotexts": "speechtotext"}.get(kind, kind)
        if kind == "service" and f"speechtotext/{name}" in known:
            continue  # the operator makes a Service of a SpeechToText's name
        assert f"{kind}/{name}" in known, f"{command.text}: nothing creates {target}"
    if verb == "port-forward":
        local, _, remote = rest[-1].partition(":")
        assert int(remote) == contract.PORT or int(remote) == 5000


def manifests_named(args: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The objects of each kustomization (``-k``) and manifest file (``-f``) kubectl's ``args`` name, by its path (each
    must build)."""
    named = {}
    for flag, path in zip(args, args[1:], strict=False):
        if flag in ("-k", "--kustomize"):
            named[path] = load_docs(run([str(tools.kubectl()), "kustomize", str(s.ROOT / path)]).stdout)
        elif flag in ("-f", "--filename") and path != "-":
            named[path] = load_docs((s.ROOT / path).read_text())
    return named


def curl_route(command: s.Command, ctx: s.Context) -> None:
    """curl against a cluster: the path is a route of the recognizer, with its language."""
    url = next(w for w in command.words if "localhost" in w or "127.0.0.1" in w)
    path, _, query = url.split("/", 1)[1].partition("?")
    assert f"/{path}" in contract.RECOGNITION_PATHS, url
    assert "language=" in query, url


def docker_checked(command: s.Command, ctx: s.Context) -> None:
    """``docker build``: the target is a stage of the Dockerfile and each build arg one of its ARGs;
    ``docker run IMAGE ARGS``: the recognizer parses ARGS."""
    words = command.words
    dockerfile = (s.ROOT / "Dockerfile").read_text()
    if words[1] == "build":
        target = words[words.index("--target") + 1]
        assert f" AS {target}\n" in dockerfile, target
        for i, w in enumerate(words):
            if w == "--build-arg":
                assert f"ARG {words[i + 1].split('=')[0]}" in dockerfile, words[i + 1]
    else:
        assert words[1] == "run", command.text
        image = next(i for i, w in enumerate(words[2:], 2) if not w.startswith("-") and words[i - 1] not in ("-p",))
        recognizer_settings(words[image + 1 :], environ={})


def operator_cli(command: s.Command, ctx: s.Context) -> None:
    """``speech-operator ...`` parses; ``crd > FILE`` writes what FILE holds."""
    words = command.words
    redirect = words.index(">") if ">" in words else None
    args = words[1:redirect]
    operator_args(args)
    if args[0] == "crd":
        assert redirect is not None and (s.ROOT / words[redirect + 1]).read_text() == crd_module.render()


def e2e_arguments(command: s.Command, ctx: s.Context) -> None:
    """``python -m tests.e2e ARGS``: the suite parses them."""
    import tempfile

    from tests.e2e.suite import parse_args

    args = command.words[3:]
    with tempfile.NamedTemporaryFile() as kubeconfig:  # the user's kubeconfig, which must exist
        parse_args([kubeconfig.name if i and args[i - 1] == "--kubeconfig" else a for i, a in enumerate(args)])


def lock_command(command: s.Command, ctx: s.Context) -> None:
    """``python -m tests.ship.lock``: the command the locks name as theirs (tests/ship/test_lock.py checks
    they match pyproject.toml); running it asks the package index and rewrites requirements/."""
    assert command.text == lock.COMMAND, command.text
    for name in lock.LOCKS:
        assert lock.lock_file(name).read_text().splitlines()[1].strip("# ") == lock.COMMAND


STATIC: dict[str, s.StaticCheck] = {
    "python -m tests.ship.lock": lock_command,
    "pip install": extras_exist,
    "bash .ci/run": ci_runs_the_test_command,
    "python -m speech_recognizer": recognizer_arguments,
    "helm install": helm_renders,
    "kubectl": kubectl_checked,
    "curl": curl_route,
    "docker": docker_checked,
    "speech-operator": operator_cli,
    "python -m tests.e2e": e2e_arguments,
}


def static_check(command: s.Command, ctx: s.Context) -> None:
    for prefix, check in sorted(STATIC.items(), key=lambda kv: -len(kv[0])):
        if command.starts_with(prefix):
            check(command, ctx)
            ctx.done.append(command.text)
            return
    raise AssertionError(f"{command.text!r} is marked not run, and no static check knows it")


# ---- sample outputs and fragments ---------------------------------------------------------------
def crd() -> dict[str, Any]:
    return load_docs((s.ROOT / "crds/speechtotexts.speech-operator.io.yaml").read_text())[0]


def output_kubectl_get(block: s.Block) -> None:
    """``kubectl get stt`` (and ``-o wide``): the CRD's printer columns."""
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    tables = [t for t in block.text.split("$ ")[1:]]
    assert len(tables) == 2
    for table in tables:
        command, header = table.splitlines()[:2]
        wide = "-o wide" in command
        want = ["NAME", *[c["name"].upper() for c in columns if wide or not c.get("priority")]]
        assert header.split() == want, (command, header)


def output_events(block: s.Block) -> None:
    """Event lines: each type and reason is one the operator posts."""
    code = "\n".join(p.read_text() for p in (s.ROOT / "operator/speech_operator").glob("*.py"))
    for line in block.text.splitlines():
        kind, reason = line.split()[:2]
        assert kind in ("Normal", "Warning"), line
        assert f'"{reason}"' in code, f"the operator posts no event {reason!r}: {line}"


def output_spec(block: s.Block) -> None:
    """A SpeechToText's spec: valid against the CRD, and taken by the operator's models (which hold the checks the
    API server cannot make, e.g. spec.settings values by the recognizer's own parser)."""
    from speech_operator import api

    obj = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText", "metadata": {"name": "en-us"},
           **yaml.safe_load(block.text)}
    validate_manifests([obj])
    api.SpeechToText.model_validate(obj)


def output_status(block: s.Block) -> None:
    """A SpeechToText's status: valid against the CRD's status schema."""
    import jsonschema

    schema = crd_schemas()[("speech-operator.io/v1alpha1", "SpeechToText")]
    jsonschema.validate(yaml.safe_load(block.text)["status"], schema["properties"]["status"])


OUTPUT_KINDS = {"kubectl get stt": output_kubectl_get, "events": output_events,
                "SpeechToText spec": output_spec, "SpeechToText status": output_status}


# ---- the tests --------------------------------------------------------------------------------------
def test_every_block_is_run_or_marked() -> None:
    """Shell, Python and JavaScript blocks run; the rest (sample output, YAML fragments) carry an output marker;
    every marker is one this runner knows, and lists commands that are in its block."""
    for block in BLOCKS:
        if block.lang not in ("sh", "python", "js"):
            assert block.marker and block.marker[0] == "output", f"README.md:{block.line}: mark it <!-- output: KIND -->"
        if block.marker and block.marker[0] == "output":
            assert block.marker[1] in OUTPUT_KINDS, f"README.md:{block.line}: unknown output kind {block.marker[1]!r}"
        prefixes, reason = block.not_run
        if prefixes:
            assert reason, f"README.md:{block.line}: say why it is not run"
            cmds = s.commands(block.text)
            for prefix in prefixes:
                assert any(c.starts_with(prefix) for c in cmds), f"README.md:{block.line}: no command starts with {prefix!r}"


def test_every_fence_is_a_block() -> None:
    """No code block escapes the runner: every fence line of the README (an indented one inside a
    list item too) opens or closes a block it runs or checks."""
    fences = [line for line in s.README.read_text().splitlines() if line.lstrip().startswith("```")]
    assert len(fences) == 2 * len(BLOCKS), "a fenced block the runner does not see (indented?): put it at column 0"
    indented = s.blocks("- a list item:\n\n  ```sh\n  curl -s localhost:5000/ready\n  ```\n")
    assert indented == []  # what the check above is for


def not_run_listing() -> list[str]:
    out = []
    for block in BLOCKS:
        prefixes, reason = block.not_run
        for command in s.commands(block.text) if prefixes else []:
            if any(command.starts_with(p) for p in prefixes):
                out.append(f"README.md:{block.line}: {command.text.splitlines()[0]}  ({reason})")
    return out


def test_what_is_not_run_here_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """The commands checked statically instead of run, printed for the record (``-s`` shows them)."""
    listing = not_run_listing()
    assert listing
    print("\n".join(["not run here (checked statically):", *listing]))


def test_readme_starts_one_configuration() -> None:
    """Every command of the README that starts the recognizer (and is run here) has the settings the
    test's server runs with (one may add the setting its section is about); they parse, and ask for the key the snippets send."""
    args = [s.server_args(c) for b in BLOCKS if b.lang == "sh" for c in starts(b)]
    assert len(args) >= 2 and all(a[: len(SERVER_ARGS)] == SERVER_ARGS for a in args), args
    for more in args:
        recognizer_settings(more, environ={})
    assert recognizer_settings(SERVER_ARGS, environ={}).api_key == KEY


def run_block(block: s.Block, shell: s.Shell, node: str | None = None, registry: ModelRegistry | None = None) -> str:
    """Run a README block as written; what it printed. A command that starts the recognizer with settings beyond the
    README's starts one (on ``registry``'s model) for the block's next commands."""
    if block.marker and block.marker[0] == "output":
        OUTPUT_KINDS[block.marker[1]](block)
        return ""
    if block.lang == "python":
        proc = shell.run([sys.executable, "-"], stdin=block.text)
        s.check_output("python README block", proc)
        assert proc.stdout.strip(), "prints what it recognized"
        if "start_continuous_recognition" in block.text or "recognized.connect" in block.text:
            # recognize_once, then the continuous recognition's `recognized` event: the sentence twice
            assert proc.stdout.count(EXPECTED_TEXT) >= 2, f"the continuous recognition printed nothing:\n{proc.stdout}"
        return proc.stdout
    if block.lang == "js":  # Node.js, with the SDK tests/jssdk installs
        assert node is not None, "a JavaScript block needs the jssdk fixture's node"
        proc = s.Shell(shell.workdir, shell.address, {**shell.env, "NODE_PATH": str(NODE_MODULES)}).run([node, "-"], stdin=block.text)
        s.check_output("JavaScript README block", proc)
        assert EXPECTED_TEXT in proc.stdout, f"the JavaScript block printed no recognition:\n{proc.stdout}"
        return proc.stdout
    assert block.lang == "sh", block.lang
    ctx = s.Context(block)
    out: list[str] = []
    with contextlib.ExitStack() as servers:
        for command in s.commands(block.text):
            shell = run_command(command, block, shell, ctx, servers, registry, out)
    return "".join(out)


#: Seconds a README command that runs the file transcriber in a process of its own may take (:meth:`s.Shell.shell`'s
#: 120 s for the others): each loads the model and builds its recognizers, seconds of CPU that on a 2-core machine shared
#: by many take many times as long on the clock. A guard against a hang, not a bound on its speed.
TRANSCRIBE_TIMEOUT = 300


def run_command(command: s.Command, block: s.Block, shell: s.Shell, ctx: s.Context, servers: contextlib.ExitStack,
                registry: ModelRegistry | None, out: list[str]) -> s.Shell:
    """Run one command of a shell block (what it printed to ``out``); the shell the block's next commands run in."""
    prefixes, _ = block.not_run
    if any(command.starts_with(p) for p in prefixes):
        static_check(command, ctx)
    elif s.is_server_start(command):
        args = s.server_args(command)
        assert args[: len(SERVER_ARGS)] == SERVER_ARGS, command.text  # the test's server (test_readme_starts_one_configuration)
        if args != SERVER_ARGS:  # and more: a server of its own
            assert registry is not None, f"{command.text}: starting a recognizer needs the session's model"
            settings = make_settings(Path(tempfile.mkdtemp(dir=shell.workdir.parent)), *args)
            server = servers.enter_context(ServerThread(create_app(settings, registry)))
            return dataclasses.replace(shell, address=f"127.0.0.1:{server.port}")
    else:
        transcribes = command.starts_with("speech-recognizer transcribe")
        proc = shell.shell(command.text, timeout=TRANSCRIBE_TIMEOUT) if transcribes else shell.shell(command.text)
        s.check_output(command.text, proc)
        out.append(proc.stdout)
        if "format=detailed" in command.text and "/speech/recognition/" in command.text:
            answer = json.loads(proc.stdout)
            said, lexical = answer["DisplayText"], answer["NBest"][0]["Lexical"]
            assert said == EXPECTED_TEXT, f"README.md says the quick start's sentence comes back as {EXPECTED_TEXT!r}, not {said!r}"
            assert lexical == EXPECTED_LEXICAL, f"docs/engine.md says its Lexical is {EXPECTED_LEXICAL!r}, not {lexical!r}"
    return shell


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block(block: s.Block, shell: s.Shell, jssdk: str, registry: ModelRegistry) -> None:
    run_block(block, shell, jssdk, registry)


def test_engine_md_quotes_the_tests_one_utterance_recording(speech_ref: Reference) -> None:
    """docs/engine.md's ending of the tests' one-utterance recording (the same sentence as the quick start's, spoken
    slower: other words) is in-process Vosk's on that fixture, which every route's answer is checked against. Its
    words, as the quick start's, are the same every run (see EXPECTED_TEXT)."""
    ending = re.search(r"the tests' one-utterance recording, spoken\s+slower, ends `([^`]+)`", ENGINE_MD.read_text()).group(1)  # type: ignore[union-attr]
    assert speech_ref.texts[0].endswith(" " + ending), f"docs/engine.md says it ends {ending!r}: {speech_ref.texts[0]!r}"


DEPLOY_README = s.ROOT / "deploy" / "README.md"
DEPLOY_BLOCKS = s.blocks(DEPLOY_README.read_text())
#: kubectl's words for the SpeechToTexts
STT = {"speechtotexts", "speechtotext", "stt"}


@pytest.mark.parametrize("block", DEPLOY_BLOCKS, ids=[f"deploy/README.md:{b.line}" for b in DEPLOY_BLOCKS])
def test_deploy_readme_block(block: s.Block) -> None:
    """deploy/README.md's commands need a cluster: each block says so, and each command passes README.md's static
    checks (what it applies validates, what it names builds and exists, its flags are kubectl's). Before the operator
    and the CRD are deleted, the SpeechToTexts are, of every namespace, waited for: once the operator is gone their
    finalizer keeps them (and their namespaces, and the CRD) for good. Before, no test read these blocks."""
    prefixes, reason = block.not_run
    assert prefixes == ["*"] and reason, f"deploy/README.md:{block.line}: mark it <!-- not run here: *: REASON -->"
    ctx = s.Context(block)
    stt_deleted = False
    for command in s.commands(block.text):
        static_check(command, ctx)
        words = command.words
        if words[:2] != ["kubectl", "delete"]:
            continue
        if STT & set(words):
            assert "--all" in words and {"-A", "--all-namespaces"} & set(words) and "--wait=false" not in words, command.text
            stt_deleted = True
        for docs in manifests_named(words[2:]).values():
            removes = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["kind"] == "CustomResourceDefinition"
                       or (d["kind"] == "Deployment" and d["metadata"]["name"] == "speech-operator")]
            assert not removes or stt_deleted, f"{command.text}: deletes {removes} before the SpeechToTexts"
    assert ctx.done == [c.text for c in s.commands(block.text)]


def test_a_broken_snippet_fails(shell: s.Shell, jssdk: str) -> None:
    """The runner fails the README's snippets as they were before issue 19: the curl without the key
    (a 403 that ``curl -s`` prints quietly), and continuous recognition that connects its handlers but
    never starts (Python and JavaScript)."""
    quick_start = next(b for b in BLOCKS if "format=detailed" in b.text and b.lang == "sh")
    keyless = s.Block(0, "sh", quick_start.text.replace('-H "Ocp-Apim-Subscription-Key: local-key" ', ""))
    with pytest.raises(AssertionError, match="error"):
        run_block(keyless, shell)
    sdk = next(b for b in BLOCKS if b.lang == "python" and "start_continuous_recognition" in b.text)
    never_started = "\n".join(line for line in sdk.text.splitlines()
                              if not line.startswith(("recognizer.start_", "recognizer.stop_", "done.wait", "recognizer.session_stopped", "recognizer.canceled")))
    with pytest.raises(AssertionError, match="continuous recognition printed nothing"):
        run_block(s.Block(0, "python", never_started), shell)
    js = next(b for b in BLOCKS if b.lang == "js")
    with pytest.raises(AssertionError, match="printed no recognition"):
        run_block(s.Block(0, "js", js.text.replace("recognizer.startContinuousRecognitionAsync();", "")), shell, jssdk)


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "ApiKey"])
def test_home_page_snippets_run(keyed: bool, server: ServerThread, readme_server: ServerThread, tmp_path: Path) -> None:
    """The home page's snippets, copied from the page of a server without a key and of the README's
    (which has one: the page says to put it in SPEECH_KEY), each run as written."""
    srv = readme_server if keyed else server
    user = s.Shell(tmp_path, f"127.0.0.1:{srv.port}", {"SPEECH_KEY": KEY} if keyed else {})
    page = user.run(["curl", "-s", f"127.0.0.1:{srv.port}/"]).stdout
    found = s.home_page_snippets(page)
    assert len(found) >= 4, page
    assert ("SPEECH_KEY" in page) == keyed, page
    s.check_output("espeak-ng", user.shell('espeak-ng -v ko -w audio.wav "오늘 날씨가 좋습니다"'))  # the user's audio
    for snippet in found:
        if snippet.startswith(("import ", "from ")):
            proc = user.run([sys.executable, "-"], stdin=snippet)
        elif snippet.startswith("curl "):
            proc = user.shell(snippet)
        elif snippet.startswith("ws://"):
            proc = user.run([sys.executable, "-c", VOSK_CLIENT, snippet.strip(), "audio.wav", KEY if keyed else ""])
        else:
            raise AssertionError(f"a snippet this test does not know how to run:\n{snippet}")
        s.check_output(snippet, proc)
        assert proc.stdout.strip(), snippet


#: A vosk-server client, as any would connect to the page's WebSocket URL (with the key in a header).
VOSK_CLIENT = textwrap.dedent("""
    import json, sys, wave
    from websockets.sync.client import connect
    url, path, key = sys.argv[1:]
    headers = {"Ocp-Apim-Subscription-Key": key} if key else {}
    with wave.open(path) as w, connect(url, additional_headers=headers) as ws:
        ws.send(json.dumps({"config": {"sample_rate": w.getframerate()}}))
        while data := w.readframes(4000):
            ws.send(data)
            json.loads(ws.recv())
        ws.send('{"eof" : 1}')
        print(json.loads(ws.recv())["text"])
""")
