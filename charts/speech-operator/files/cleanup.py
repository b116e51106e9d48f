# Helm pre-delete hook: delete the release's SpeechToText resources while the operator still
# runs, and wait until they are gone. Without it `helm uninstall` would remove the operator in
# the same breath, leaving each SpeechToText stuck on the operator's finalizer.
# Standard library only; run by the operator image as `python -c <this file> NAME...`.
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def api_base():
    if os.environ.get("CLEANUP_API"):  # tests
        return os.environ["CLEANUP_API"]
    return "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])


def call(method, url, token, context):
    req = urllib.request.Request(url, method=method, headers={"Authorization": "Bearer " + token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def main(names):
    namespace = os.environ["CLEANUP_NAMESPACE"]
    timeout = float(os.environ.get("CLEANUP_TIMEOUT", "300"))
    token_file = os.environ.get("CLEANUP_TOKEN_FILE", SA + "/token")
    with open(token_file) as fh:
        token = fh.read().strip()
    base = api_base()
    context = ssl.create_default_context(cafile=SA + "/ca.crt") if base.startswith("https") else None
    urls = {n: "%s/apis/speech-operator.io/v1alpha1/namespaces/%s/speechtotexts/%s" % (base, namespace, n) for n in names}
    for name, url in urls.items():
        status, _ = call("DELETE", url, token, context)
        if status not in (200, 202, 404):
            print("cleanup: DELETE speechtotext/%s -> HTTP %s" % (name, status), flush=True)
            return 1
        print("cleanup: deleting speechtotext/%s (HTTP %s)" % (name, status), flush=True)
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            status, _ = call("GET", url, token, context)
            if status == 404:
                print("cleanup: speechtotext/%s is gone" % name, flush=True)
                del pending[name]
        if pending:
            if time.monotonic() > deadline:
                print("cleanup: still there after %ss: %s" % (timeout, ", ".join(sorted(pending))), flush=True)
                return 1
            time.sleep(2)
    return 0


sys.exit(main(sys.argv[1:]))
