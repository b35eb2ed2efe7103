#!/usr/bin/env python3
# Copyright 2026 Flant JSC
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Runs the module's batch hooks the way addon-operator does, against a real API server.

For a lifecycle binding (beforeHelm, afterHelm, afterDeleteHelm) it:
  1. asks the binary for `hook config` (and checks `hook list` agrees with it);
  2. for every hook with that binding, in ORDER then index order, builds the binding context from real
     objects: each kubernetes binding is listed with kubectl (kind, namespace/name/label/field
     selectors) and its jqFilter is applied with jq, giving `filterResult` snapshot items;
  3. writes BINDING_CONTEXT_PATH, VALUES_PATH, CONFIG_VALUES_PATH, pre-creates the output files and
     runs `hook run <i>`;
  4. checks and applies the values JSON Patch (only add/remove under /storageVolumeDataManager/,
     strict removes), and with --apply-kube applies the object-patch operations with kubectl;
  5. prints the metrics.

Usage:
  hook-runner.py --hooks-bin BIN --binding beforeHelm --values IN.yaml --out OUT.yaml \
      --kubectl KUBECTL --kubeconfig KUBECONFIG [--apply-kube] [--retries N --retry-delay S]
With --retries a failed run (the hook, or any object patch, e.g. a JSON Patch whose `test` operation
does not hold on the live object) is printed and re-run from fresh snapshots, as addon-operator does.
IN.yaml holds {global: ..., storageVolumeDataManager: ...}; OUT.yaml gets the values after the hooks.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

VALUES_KEY = "storageVolumeDataManager"


class RunnerError(Exception):
    pass


def sh(cmd, stdin=None, env=None, check=True):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise RunnerError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def resource(binding):
    api = binding.get("apiVersion", "v1")
    kind = binding["kind"]
    if "/" in api:
        group, version = api.split("/", 1)
        return f"{kind}.{version}.{group}"
    return kind


def list_objects(kubectl, binding):
    res = resource(binding)
    namespaces = ((binding.get("namespace") or {}).get("nameSelector") or {}).get("matchNames")
    base = kubectl + ["get", res, "-o", "json"]
    sel = ",".join(f"{k}={v}" for k, v in ((binding.get("labelSelector") or {}).get("matchLabels") or {}).items())
    if sel:
        base += ["-l", sel]
    fields = []
    for e in ((binding.get("fieldSelector") or {}).get("matchExpressions") or []):
        op = "=" if e.get("operator") in ("Equals", "=", "==") else "!="
        fields.append(f"{e['field']}{op}{e['value']}")
    if fields:
        base += ["--field-selector", ",".join(fields)]
    items = []
    for ns in (namespaces or [None]):
        cmd = base + (["-n", ns] if ns else ["-A"])
        p = sh(cmd, check=False)
        if p.returncode != 0:
            if "NotFound" in p.stderr or "not found" in p.stderr:
                continue
            raise RunnerError(f"listing {res}: {p.stderr.strip()}")
        items += json.loads(p.stdout).get("items", [])
    names = ((binding.get("nameSelector") or {}).get("matchNames"))
    if names:
        items = [o for o in items if o["metadata"]["name"] in names]
    return items


def snapshot(kubectl, binding):
    out = []
    for obj in list_objects(kubectl, binding):
        item = {}
        if binding.get("jqFilter"):
            p = sh(["jq", "-c", binding["jqFilter"]], stdin=json.dumps(obj))
            item["filterResult"] = json.loads(p.stdout)
        if binding.get("keepFullObjectsInMemory", not binding.get("jqFilter")):
            item["object"] = obj
        out.append(item)
    return out


def pointer_parts(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_values_patch(values, patch):
    for op in patch:
        path = op.get("path", "")
        if op.get("op") not in ("add", "remove"):
            raise RunnerError(f"values patch op {op.get('op')!r} is not allowed (only add/remove)")
        if not path.startswith(f"/{VALUES_KEY}/"):
            raise RunnerError(f"values patch path {path!r} is outside /{VALUES_KEY}/")
        parts = pointer_parts(path)
        node = values
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise RunnerError(f"values patch {path}: parent does not exist")
            node = node[p]
        if op["op"] == "add":
            node[parts[-1]] = op["value"]
        else:
            if parts[-1] not in node:
                raise RunnerError(f"values patch remove {path}: no such value (strict mode)")
            del node[parts[-1]]


def kube_ops(text):
    ops = []
    for line in text.splitlines():
        if line.strip():
            ops.append(json.loads(line))
    return ops


def failed_tests(kubectl, kind, name, ns, tests):
    """The RFC 6902 `test` operations that do not hold on the live object (re-read after a rejected
    patch), as `path: want X, live Y` strings."""
    p = sh(kubectl + ["get", kind, name, "-o", "json"] + ns, check=False)
    if p.returncode != 0:
        return []
    live = json.loads(p.stdout)
    failed = []
    for t in tests:
        node = live
        for part in pointer_parts(t["path"]):
            node = node.get(part) if isinstance(node, dict) else None
        if node != t.get("value"):
            failed.append(f"test {t['path']}: want {json.dumps(t.get('value'))}, live {json.dumps(node)}")
    return failed


def apply_kube_op(kubectl, op):
    kind = resource({"apiVersion": op.get("apiVersion", "v1"), "kind": op["kind"]}) if "kind" in op else None
    ns = ["-n", op["namespace"]] if op.get("namespace") else []
    operation = op["operation"]
    if operation in ("Delete", "DeleteInBackground", "DeleteNonCascading"):
        cascade = {"Delete": "foreground", "DeleteInBackground": "background", "DeleteNonCascading": "orphan"}[operation]
        # shell-operator waits for a foreground Delete (bounded) and returns at once otherwise.
        wait = ["--timeout=20s"] if operation == "Delete" else ["--wait=false"]
        sh(kubectl + ["delete", kind, op["name"], "--ignore-not-found", f"--cascade={cascade}"] + wait + ns)
    elif operation in ("MergePatch", "JSONPatch"):
        body = op.get("mergePatch") if operation == "MergePatch" else op.get("jsonPatch")
        kind_flag = "merge" if operation == "MergePatch" else "json"
        sub = ["--subresource", op["subresource"]] if op.get("subresource") else []
        p = sh(kubectl + ["patch", kind, op["name"], "--type", kind_flag, "-p", json.dumps(body)] + ns + sub, check=False)
        if p.returncode != 0 and not (op.get("ignoreMissingObject") and "NotFound" in p.stderr):
            tests = [t for t in (body if operation == "JSONPatch" and isinstance(body, list) else []) if t.get("op") == "test"]
            failed = failed_tests(kubectl, kind, op["name"], ns, tests) if tests else []
            if failed:
                # kubectl only says "The request is invalid"; name the test(s) that did not hold.
                raise RunnerError(f"JSONPatch {kind}/{op['name']}: a test operation failed on the live object, "
                                  f"the whole patch was rejected and nothing written ({'; '.join(failed)}): "
                                  f"{p.stderr.strip()}")
            raise RunnerError(f"{operation} {kind}/{op['name']}: {p.stderr.strip()}")
    elif operation == "JQPatch":
        p = sh(kubectl + ["get", kind, op["name"], "-o", "json"] + ns, check=False)
        if p.returncode != 0:
            if op.get("ignoreMissingObject") and "NotFound" in p.stderr:
                return
            raise RunnerError(f"JQPatch get {kind}/{op['name']}: {p.stderr.strip()}")
        new = sh(["jq", "-c", op["jqFilter"]], stdin=p.stdout).stdout
        sh(kubectl + ["replace", "-f", "-"], stdin=new)
    elif operation in ("Create", "CreateOrUpdate", "CreateIfNotExists"):
        obj = op["object"] if isinstance(op["object"], str) else json.dumps(op["object"])
        verb = {"Create": ["create", "-f", "-"], "CreateOrUpdate": ["apply", "-f", "-"],
                "CreateIfNotExists": ["create", "-f", "-"]}[operation]
        p = sh(kubectl + verb, stdin=obj, check=False)
        if p.returncode != 0 and not (operation == "CreateIfNotExists" and "AlreadyExists" in p.stderr):
            raise RunnerError(f"{operation}: {p.stderr.strip()}")
    else:
        raise RunnerError(f"unknown object-patch operation {operation!r}")


def run_hook(args, kubectl, index, hook, values):
    """One run of one hook: fresh snapshots, `hook run`, values and object patches. Returns the new
    values; raises RunnerError (after applying every operation it could, as shell-operator's
    ObjectPatcher does) when the hook or any operation failed."""
    values = copy.deepcopy(values)
    name = hook["metadata"]["name"]
    snapshots = {b["name"]: snapshot(kubectl, b) for b in hook.get("kubernetes", [])}
    context = [{"binding": args.binding, "snapshots": snapshots}]
    with tempfile.TemporaryDirectory() as d:
        paths = {k: os.path.join(d, f"{k}.json") for k in
                 ("BINDING_CONTEXT_PATH", "VALUES_PATH", "CONFIG_VALUES_PATH", "VALUES_JSON_PATCH_PATH",
                  "CONFIG_VALUES_JSON_PATCH_PATH", "KUBERNETES_PATCH_PATH", "METRICS_PATH")}
        config_values = {"global": {}, VALUES_KEY: {k: v for k, v in values[VALUES_KEY].items() if k != "internal"}}
        for key, content in (("BINDING_CONTEXT_PATH", context), ("VALUES_PATH", values),
                             ("CONFIG_VALUES_PATH", config_values)):
            with open(paths[key], "w", encoding="utf-8") as f:
                json.dump(content, f)
        for key in ("VALUES_JSON_PATCH_PATH", "CONFIG_VALUES_JSON_PATCH_PATH", "KUBERNETES_PATCH_PATH", "METRICS_PATH"):
            open(paths[key], "w").close()
        env = dict(paths, MODULE_NAME="storage-volume-data-manager", PATH=os.environ.get("PATH", ""))
        p = sh([args.hooks_bin, "hook", "run", str(index)], env=env, check=False)
        if p.stderr.strip():
            print(f"hook {name}: {p.stderr.strip()}", file=sys.stderr)
        if p.returncode != 0:
            raise RunnerError(f"hook {name} failed")
        patch_text = open(paths["VALUES_JSON_PATCH_PATH"], encoding="utf-8").read()
        ops = kube_ops(open(paths["KUBERNETES_PATCH_PATH"], encoding="utf-8").read())
        # shell-operator applies every operation, collects the errors and fails the run with them
        # (pkg/kube/object_patch/patch.go): a failed operation does not stop the later ones.
        errors = []
        for op in ops:
            if args.apply_kube:
                try:
                    apply_kube_op(kubectl, op)
                except RunnerError as e:
                    print(f"hook {name}: object patch failed: {e}", file=sys.stderr)
                    errors.append(str(e))
            else:
                # Operation, kind and name only: a Create may carry Secret data (keys).
                what = f"{op.get('operation')} {op.get('kind', '')}/{op.get('name', '')}"
                print(f"hook {name}: object patch (not applied): {what}", file=sys.stderr)
        if errors:
            raise RunnerError(f"hook {name}: {len(errors)} of {len(ops)} object patch(es) failed: " + "; ".join(errors))
        if patch_text.strip():
            apply_values_patch(values, json.loads(patch_text))
        for line in open(paths["METRICS_PATH"], encoding="utf-8").read().splitlines():
            if line.strip():
                print(f"hook {name}: metric {line}", file=sys.stderr)
        print(f"hook {name}: ok ({len(ops)} object patch(es))", file=sys.stderr)
    return values


def run(args):
    kubectl = [args.kubectl, "--kubeconfig", args.kubeconfig]
    listing = sh([args.hooks_bin, "hook", "list"], env={}).stdout
    m = re.match(r"Found (\d+) items", listing)
    if not m:
        raise RunnerError(f"`hook list` did not answer `Found N items`: {listing!r}")
    config = json.loads(sh([args.hooks_bin, "hook", "config"], env={}).stdout)
    if config.get("version") != "v1" or len(config["hooks"]) != int(m.group(1)):
        raise RunnerError("`hook config` is not a v1 batch config matching `hook list`")
    with open(args.values, encoding="utf-8") as f:
        values = yaml.safe_load(f)
    selected = sorted(((h[args.binding], i, h) for i, h in enumerate(config["hooks"]) if args.binding in h),
                      key=lambda t: (t[0], t[1]))
    for _, index, hook in selected:
        name = hook["metadata"]["name"]
        attempt = 0
        while True:
            attempt += 1
            try:
                values = run_hook(args, kubectl, index, hook, values)
                break
            except RunnerError as e:
                # addon-operator retries a failed hook task with backoff, from fresh snapshots
                # (deckhouse-conventions.md §3.9); --retries N emulates that, bounded.
                if attempt > args.retries:
                    raise
                print(f"hook {name}: attempt {attempt} failed, retrying in {args.retry_delay}s "
                      f"from a fresh snapshot: {e}", file=sys.stderr)
                time.sleep(args.retry_delay)
    with open(args.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(values, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hooks-bin", required=True)
    ap.add_argument("--binding", required=True)
    ap.add_argument("--values", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--apply-kube", action="store_true")
    ap.add_argument("--retries", type=int, default=0,
                    help="re-run a failed hook up to N times from fresh snapshots (addon-operator retries failed hooks)")
    ap.add_argument("--retry-delay", type=float, default=2.0, help="seconds between retries")
    args = ap.parse_args()
    try:
        run(args)
    except RunnerError as e:
        print(f"hook-runner: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
