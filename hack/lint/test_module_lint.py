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
"""Self-test of hack/lint/module_lint.py: the checks must catch what they claim to catch, or a green
module lint means nothing. Mutates one rendered manifest at a time, and the repository facts the
static checks compare (werf images, chart image names, oss.yaml, Cargo.lock, the docs' reason and
settings tables against the code and the schema), and expects a specific error each time.
Run: python3 hack/lint/test_module_lint.py RENDERED.yaml  (a render of the chart with defaults)."""

import copy
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import module_lint  # noqa: E402


def find(docs, kind, name):
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind}/{name}")


def controller_container(docs):
    return find(docs, "Deployment", "controller")["spec"]["template"]["spec"]["containers"][0]


MUTATIONS = [
    ("missing module label", lambda d: find(d, "Service", "webhook")["metadata"]["labels"].pop("module"),
     "labels heritage=deckhouse"),
    ("writable root filesystem",
     lambda d: controller_container(d)["securityContext"].update(readOnlyRootFilesystem=False),
     "readOnlyRootFilesystem"),
    ("privilege escalation",
     lambda d: controller_container(d)["securityContext"].update(allowPrivilegeEscalation=True),
     "allowPrivilegeEscalation"),
    ("no readiness probe", lambda d: controller_container(d).pop("readinessProbe"), "readinessProbe"),
    ("no ephemeral storage request",
     lambda d: controller_container(d)["resources"]["requests"].pop("ephemeral-storage"), "ephemeral-storage"),
    ("image not from digests", lambda d: controller_container(d).update(image="nginx:latest"), "modulesImages"),
    ("pull policy Always", lambda d: controller_container(d).update(imagePullPolicy="Always"), "imagePullPolicy"),
    ("root pod", lambda d: find(d, "Deployment", "controller")["spec"]["template"]["spec"]["securityContext"].update(runAsUser=1000),
     "65534 or 64535"),
    ("unknown priority class",
     lambda d: find(d, "Deployment", "webhook")["spec"]["template"]["spec"].update(priorityClassName="high"),
     "priorityClassName"),
    ("revision history", lambda d: find(d, "Deployment", "webhook")["spec"].update(revisionHistoryLimit=10),
     "revisionHistoryLimit"),
    ("no PDB", lambda d: d.remove(find(d, "PodDisruptionBudget", "controller")), "PodDisruptionBudget"),
    ("VPA Auto", lambda d: find(d, "VerticalPodAutoscaler", "webhook")["spec"]["updatePolicy"].update(updateMode="Auto"),
     "Auto"),
    ("wildcard verb", lambda d: find(d, "ClusterRole", "d8:storage-volume-data-manager:webhook")["rules"][0].update(verbs=["*"]),
     "wildcard"),
    ("badly named ClusterRole",
     lambda d: find(d, "ClusterRole", "d8:storage-volume-data-manager:webhook")["metadata"].update(name="webhook-reader"),
     "must start with"),
    ("user-authz without annotation",
     lambda d: find(d, "ClusterRole", "d8:user-authz:storage-volume-data-manager:editor")["metadata"].pop("annotations"),
     "access-level"),
    ("binding to an unknown ServiceAccount",
     lambda d: find(d, "ClusterRoleBinding", "d8:storage-volume-data-manager:exporter")["subjects"][0].update(name="ghost"),
     "not rendered"),
    ("webhook without werf annotations",
     lambda d: find(d, "ValidatingWebhookConfiguration", "d8-storage-volume-data-manager-dataexport")["metadata"].pop("annotations"),
     "werf.io"),
    ("numeric targetPort", lambda d: find(d, "Service", "webhook")["spec"]["ports"][0].update(targetPort=9443),
     "named port"),
    ("undeclared mount", lambda d: controller_container(d)["volumeMounts"][0].update(mountPath="/var/lib/x"),
     "mount-points"),
]


def repo_facts():
    return (module_lint.werf_images(), module_lint.template_images(),
            module_lint.load_yaml(os.path.join(module_lint.ROOT, "oss.yaml")), module_lint.lock_versions(),
            module_lint.workspace_rust_version())


def static_mutations():
    """(name, check, expected error): each check runs on this repository's facts with one thing changed."""
    def images(change):
        def run():
            built, used, *_ = repo_facts()
            change(built, used)
            module_lint.check_images(built, used)
        return run

    def oss(change, rust=None):
        def run():
            *_, projects, locked, workspace_rust = repo_facts()
            change(projects, locked)
            module_lint.check_oss(projects, locked, rust or workspace_rust)
        return run

    def project(projects, pid):
        return next(p for p in projects if p["id"] == pid)

    def docs(change):
        def run():
            facts = module_lint.repo_doc_facts()
            change(facts)
            module_lint.check_docs(facts)
        return run

    def edit(facts, doc, old, new):
        text = facts["docs"][doc]
        if old not in text:
            raise AssertionError(f"{doc} no longer contains {old!r}; update the self-test")
        facts["docs"][doc] = text.replace(old, new, 1)

    def add_reason(facts):
        facts["reasons"]["SNAPSHOT_LOST"] = "SnapshotLost"
        facts["controller"]["crates/controller/src/x.rs"] = "fn f() { reason::SNAPSHOT_LOST }"

    def unset_reason(facts):
        facts["controller"] = {p: rs.replace("reason::LIMIT_REACHED", "reason::PENDING")
                               for p, rs in facts["controller"].items()}

    def schema_default(path, value):
        def change(facts):
            node = facts["schema"]
            for part in path.split("."):
                node = node["properties"][part]
            node["default"] = value
        return change

    usage, usage_ru = "docs/USAGE.md", "docs/USAGE.ru.md"
    conf, conf_ru = "docs/CONFIGURATION.md", "docs/CONFIGURATION.ru.md"
    return [
        ("a Ready reason the docs do not list", docs(add_reason), "SnapshotLost (crates/api/src/conditions.rs) is missing"),
        ("a Ready reason dropped from the Russian table",
         docs(lambda f: edit(f, usage_ru, "| `Terminating` | False |", "| `Terminated` | False |")),
         "USAGE.ru.md: Ready reason Terminating"),
        ("a documented reason the code lacks",
         docs(lambda f: edit(f, usage, "| `Terminating` | False |", "| `Terminating` | False | x |\n| `Paused` | False |")),
         "lists Paused, which crates/api/src/conditions.rs does not define"),
        ("a wrong Ready value", docs(lambda f: edit(f, usage, "| `ServerReady` | True |", "| `ServerReady` | False |")),
         "the controller sets True"),
        ("a reason the controller never sets", docs(unset_reason), "LimitReached is never set by crates/controller"),
        ("a webhook denial the docs do not list",
         docs(lambda f: f.update(validate='fn g() { deny("TooManyExports", "x", vec![]) }\n' + f["validate"])),
         "denies with reason TooManyExports, which the admission error table lacks"),
        ("a documented denial the webhook never gives",
         docs(lambda f: edit(f, usage, "| `NoObject` |", "| `NoObjectGiven` |")),
         "lists NoObjectGiven, which crates/webhook/src/validate.rs never denies with"),
        ("a default that differs from the schema", docs(schema_default("maxTTL", "12h")),
         "gives maxTTL the default 24h, but the schema's is '12h'"),
        ("an object default that differs from the schema",
         docs(schema_default("exporter.resources", {"requests": {"cpu": "50m", "memory": "64Mi"}})),
         "gives exporter.resources the default"),
        ("a setting missing from the Russian table",
         docs(lambda f: edit(f, conf_ru, "| `ingressClass` | `\"\"` |", "| `ingressClasses` | `\"\"` |")),
         "CONFIGURATION.ru.md: setting ingressClass is missing from the settings table"),
        ("a default given where the schema has none",
         docs(lambda f: edit(f, conf, "| `https.mode` | — |", "| `https.mode` | `CertManager` |")),
         "but the schema has none"),
        ("a prose default that differs from the schema",
         docs(lambda f: edit(f, usage, "`maxConcurrentExports` (default `20`", "`maxConcurrentExports` (default `10`")),
         "says maxConcurrentExports defaults to 10"),
        ("chart image without a final werf image",
         images(lambda b, u: b.update(exporter=("exporter", False))), "gets no digest"),
        ("chart image with no werf file", images(lambda b, u: b.pop("exporter")), "gets no digest"),
        ("final image nobody uses", images(lambda b, u: u.pop("exporter")), "not used by any template"),
        ("image named apart from its directory",
         images(lambda b, u: b.update(controller=("svdm-controller", True))), "named after its directory"),
        ("oss.yaml crate version behind Cargo.lock",
         oss(lambda p, lk: project(p, "kube").update(version="4.0.0")), "Cargo.lock pins"),
        ("oss.yaml crate the images do not carry",
         oss(lambda p, lk: p.append({"id": "left-pad", "version": "1.0.0"})), "not in Cargo.lock"),
        ("oss.yaml Rust version behind the workspace's",
         oss(lambda p, lk: None, rust="1.99"), "builds with Rust 1.99"),
    ]


def main():
    passed = failed = 0
    module_lint.errors.clear()
    built, used, projects, locked, rust = repo_facts()
    module_lint.check_images(built, used)
    module_lint.check_oss(projects, locked, rust)
    module_lint.check_docs(module_lint.repo_doc_facts())
    if module_lint.errors:
        print(f"FAIL: the repository's own facts have errors: {module_lint.errors}")
        failed += 1
    for name, run, expected in static_mutations():
        module_lint.errors.clear()
        run()
        if any(expected in e for e in module_lint.errors):
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {name}: expected an error containing {expected!r}, got {module_lint.errors}")

    with open(sys.argv[1], encoding="utf-8") as f:
        base = [d for d in yaml.safe_load_all(f) if d]
    module_lint.errors.clear()
    module_lint.check_rendered(copy.deepcopy(base), "base")
    if module_lint.errors:
        print(f"FAIL: the unmodified render has errors: {module_lint.errors}")
        failed += 1
    for name, mutate, expected in MUTATIONS:
        docs = copy.deepcopy(base)
        mutate(docs)
        module_lint.errors.clear()
        module_lint.check_rendered(docs, name)
        if any(expected in e for e in module_lint.errors):
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {name}: expected an error containing {expected!r}, got {module_lint.errors}")
    module_lint.errors.clear()
    print(f"lint self-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
