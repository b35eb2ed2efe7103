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
"""Module bundle checks that need no cluster: settings schema, values for rendering, and the
deckhouse conventions (the dmt rules that matter for this module) on the repository and on
rendered manifests.

Subcommands (used by hack/module-lint.sh):
  cases                      run openapi/openapi-case-tests.yaml against the schemas
  settings-sets DIR          write one settings file per documented example (plus defaults) to DIR
  values SETTINGS OUT        module values for Helm: settings + schema defaults + fake hook values
  static                     repository checks (module.yaml, .helmignore, openapi, crds, docs, images)
  rendered FILE...           checks on `helm template` output

Prints `error: ...` / `warning: ...` lines; exits 1 when there is an error.
"""

import copy
import json
import os
import re
import sys

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = "storage-volume-data-manager"
VALUES_KEY = "storageVolumeDataManager"
NAMESPACE = "d8-" + MODULE

errors = []
warnings = []


def error(msg):
    errors.append(msg)


def warn(msg):
    warnings.append(msg)


def finish(what):
    for w in warnings:
        print(f"warning: {w}")
    for e in errors:
        print(f"error: {e}")
    print(f"{what}: {len(errors)} error(s), {len(warnings)} warning(s)")
    return 1 if errors else 0


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- schemas


def strict(schema):
    """addon-operator's view of a schema: additionalProperties is false wherever it is not given,
    and x-* keys are ignored by the validator."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for k, v in list(node.items()):
                if k in ("properties", "patternProperties", "definitions"):
                    for sub in v.values():
                        walk(sub)
                elif k in ("items", "additionalProperties", "not"):
                    walk(v)
                elif k in ("oneOf", "anyOf", "allOf"):
                    for sub in v:
                        walk(sub)
        return node

    return walk(schema)


def config_schema():
    return strict(load_yaml(os.path.join(ROOT, "openapi/config-values.yaml")))


def values_schema():
    """values.yaml with x-extend of config-values applied, x-required-for-helm made required."""
    base = load_yaml(os.path.join(ROOT, "openapi/config-values.yaml"))
    vals = load_yaml(os.path.join(ROOT, "openapi/values.yaml"))
    merged = copy.deepcopy(base)
    merged.setdefault("properties", {}).update(vals.get("properties", {}))

    def required_for_helm(node):
        if isinstance(node, dict):
            if "x-required-for-helm" in node:
                node["required"] = sorted(set(node.get("required", [])) | set(node["x-required-for-helm"]))
            for v in node.values():
                required_for_helm(v)
        elif isinstance(node, list):
            for v in node:
                required_for_helm(v)

    required_for_helm(merged)
    return strict(merged)


def validate(schema, instance):
    v = jsonschema.Draft7Validator(schema)
    return sorted(f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in v.iter_errors(instance))


def apply_defaults(schema, value):
    """Fills `default`s the way addon-operator does: an absent property with a default gets it,
    and objects (present or defaulted) are filled recursively."""
    if not isinstance(schema, dict):
        return value
    if schema.get("type") == "object" and isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    return value


FAKE_INTERNAL = {
    "webhookCert": {"ca": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                    "crt": "-----BEGIN CERTIFICATE-----\nCRT\n-----END CERTIFICATE-----\n",
                    "key": "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"},
    "exporterCA": {"crt": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                   "key": "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n"},
}


def module_values(settings, internal=None):
    errs = validate(config_schema(), settings)
    if errs:
        raise ValueError("settings do not match openapi/config-values.yaml: " + "; ".join(errs))
    schema = values_schema()
    values = apply_defaults(schema, copy.deepcopy(settings))
    values["internal"] = copy.deepcopy(internal if internal is not None else FAKE_INTERNAL)
    https = values.get("https") or {}
    if https.get("mode") == "CustomCertificate":
        values["internal"].setdefault("customCertificateData", {
            "tls.crt": "-----BEGIN CERTIFICATE-----\nCUSTOM\n-----END CERTIFICATE-----\n",
            "tls.key": "-----BEGIN PRIVATE KEY-----\nCUSTOM\n-----END PRIVATE KEY-----\n"})
    values = apply_defaults(schema, values)
    values.setdefault("registry", {"dockercfg": "eyJhdXRocyI6e319"})
    errs = validate(schema, values)
    if errs:
        raise ValueError("values do not match openapi/values.yaml: " + "; ".join(errs))
    return {VALUES_KEY: values}


def settings_sets():
    """The defaults, every x-examples entry of every top-level setting alone, and all first
    examples together."""
    schema = load_yaml(os.path.join(ROOT, "openapi/config-values.yaml"))
    sets = {"defaults": {}}
    combined = {}
    for name, prop in schema["properties"].items():
        examples = list(prop.get("x-examples", []))
        if "x-example" in prop:
            examples.append(prop["x-example"])
        for i, ex in enumerate(examples):
            sets[f"{name}-{i}"] = {name: ex}
        if examples:
            combined[name] = examples[-1]
    sets["all-examples"] = combined
    for name, doc in doc_examples("ModuleConfig"):
        sets[name] = (doc.get("spec") or {}).get("settings") or {}
    return sets


def doc_examples(kind):
    """YAML blocks of English docs/*.md holding objects of `kind`, as (label, object)."""
    docs = os.path.join(ROOT, "docs")
    out = []
    for f in sorted(os.listdir(docs)) if os.path.isdir(docs) else []:
        if not f.endswith(".md") or f.endswith(".ru.md"):
            continue
        text = open(os.path.join(docs, f), encoding="utf-8").read()
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            for j, doc in enumerate(yaml.safe_load_all(block)):
                if isinstance(doc, dict) and doc.get("kind") == kind:
                    out.append((f"docs-{f[:-3]}-{i}-{j}", doc))
    return out


def crd_schema():
    crd = [d for d in yaml.safe_load_all(open(os.path.join(ROOT, "crds/dataexports.yaml"), encoding="utf-8")) if d][0]
    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema.setdefault("properties", {})["apiVersion"] = {"type": "string", "enum": ["storage.deckhouse.io/v1alpha1"]}
    schema["properties"]["kind"] = {"type": "string", "enum": ["DataExport"]}
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def cmd_cases():
    path = os.path.join(ROOT, "openapi/openapi-case-tests.yaml")
    cases = load_yaml(path)
    cfg, full = config_schema(), values_schema()
    n = 0
    for polarity in ("positive", "negative"):
        for kind, schema in (("configValues", cfg), ("values", full)):
            for i, case in enumerate((cases.get(polarity) or {}).get(kind) or []):
                n += 1
                instance = case
                if kind == "values":
                    instance = apply_defaults(schema, copy.deepcopy(case))
                errs = validate(schema, instance)
                if polarity == "positive" and errs:
                    error(f"{polarity}.{kind}[{i}] should be valid: {errs}")
                if polarity == "negative" and not errs:
                    error(f"{polarity}.{kind}[{i}] should be invalid: {json.dumps(case)}")
    for name, settings in settings_sets().items():
        n += 1
        errs = validate(cfg, settings)
        if errs:
            error(f"documented example {name} is invalid: {errs}")
    # DataExport examples in the docs must match the CRD schema.
    crd = crd_schema()
    for name, doc in doc_examples("DataExport"):
        n += 1
        errs = validate(crd, doc)
        if errs:
            error(f"{name}: DataExport example does not match the CRD: {errs}")
    print(f"openapi cases: {n - len(errors)} passed, {len(errors)} failed")
    return finish("openapi cases")


# ---------------------------------------------------------------- repository checks

ENUM_RE = re.compile(r"^([A-Z][A-Za-z0-9]*(\.[0-9]+)*|[0-9][A-Za-z0-9.]*)$")
CYRILLIC = re.compile("[\u0400-\u04FF]")


def check_enums(node, where):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "enum" and isinstance(v, list):
                for item in v:
                    if isinstance(item, str) and item and not ENUM_RE.match(item):
                        error(f"{where}: enum value {item!r} is not CamelCase (dmt openapi/enum)")
            else:
                check_enums(v, where)
    elif isinstance(node, list):
        for v in node:
            check_enums(v, where)


def cmd_static():
    # module.yaml: dmt parses it strictly.
    allowed = {"name", "stage", "descriptions", "namespace", "subsystems", "tags", "weight", "critical",
               "exclusiveGroup", "requirements", "accessibility", "disable", "update"}
    m = load_yaml(os.path.join(ROOT, "module.yaml"))
    for k in m:
        if k not in allowed:
            error(f"module.yaml: unknown key {k}")
    if m.get("name") != MODULE or m.get("namespace") != NAMESPACE:
        error("module.yaml: name/namespace mismatch")
    if not (m.get("descriptions") or {}).get("en") or not (m.get("descriptions") or {}).get("ru"):
        error("module.yaml: descriptions.en and descriptions.ru are required")
    if m.get("stage") not in ("Experimental", "Preview", "General Availability", "Deprecated"):
        error("module.yaml: invalid stage")
    if "weight" in m:
        error("module.yaml: weight must be removed when requirements.deckhouse >= 1.72")
    msgs = ((m.get("disable") or {}).get("messages") or {})
    if m.get("disable") and not (msgs.get("en") and msgs.get("ru")):
        error("module.yaml: disable.messages needs en and ru")

    # Chart.yaml
    chart = load_yaml(os.path.join(ROOT, "Chart.yaml"))
    if chart.get("name") != MODULE:
        error("Chart.yaml: name must be the module name")

    # .helmignore covers every non-chart root entry.
    patterns = [ln.strip() for ln in open(os.path.join(ROOT, ".helmignore"), encoding="utf-8")
                if ln.strip() and not ln.startswith("#")]
    import fnmatch
    chart_content = {"templates", "charts", "monitoring", "Chart.yaml", "values.yaml", ".helmignore"}
    for entry in sorted(os.listdir(ROOT)):
        if entry in chart_content:
            continue
        if not any(fnmatch.fnmatch(entry, p.rstrip("/")) for p in patterns):
            error(f".helmignore does not cover root entry {entry!r} (dmt module/helmignore)")
    for p in patterns:
        if p in ("*", "**") or fnmatch.fnmatch("templates", p) or fnmatch.fnmatch("Chart.yaml", p):
            error(f".helmignore pattern {p!r} would drop chart content")

    # openapi
    cfg = load_yaml(os.path.join(ROOT, "openapi/config-values.yaml"))
    check_enums(cfg, "openapi/config-values.yaml")
    if "default" in (cfg.get("properties", {}).get("highAvailability") or {}):
        error("openapi: highAvailability must have no default (dmt openapi/high-availability)")
    ru = load_yaml(os.path.join(ROOT, "openapi/doc-ru-config-values.yaml"))

    def described(en, ru_node, path):
        for name, prop in (en.get("properties") or {}).items():
            if not prop.get("description"):
                error(f"openapi/config-values.yaml: {path}{name} has no description")
            ru_prop = (ru_node.get("properties") or {}).get(name) if ru_node else None
            if not ru_prop or not ru_prop.get("description"):
                error(f"openapi/doc-ru-config-values.yaml: {path}{name} has no Russian description")
            if path == "" and "x-examples" not in prop and "x-example" not in prop:
                error(f"openapi/config-values.yaml: {name} has no example")
            if prop.get("type") == "object" and prop.get("properties"):
                described(prop, ru_prop, f"{path}{name}.")

    described(cfg, ru, "")
    for f in ("config-values.yaml", "values.yaml"):
        text = open(os.path.join(ROOT, "openapi", f), encoding="utf-8").read()
        if CYRILLIC.search(text):
            error(f"openapi/{f}: Cyrillic outside doc-ru files")
        if "x-kubernetes-validations" in text:
            error(f"openapi/{f}: x-kubernetes-validations does not belong in openapi/")

    # crds: doc-ru twins, module label, enums.
    crd_dir = os.path.join(ROOT, "crds")
    for f in sorted(os.listdir(crd_dir)):
        if not f.endswith(".yaml"):
            continue
        if f.startswith("doc-ru-"):
            if not os.path.exists(os.path.join(crd_dir, f[len("doc-ru-"):])):
                error(f"crds/{f}: no base file")
            continue
        if not os.path.exists(os.path.join(crd_dir, "doc-ru-" + f)):
            error(f"crds/{f}: no crds/doc-ru-{f} (dmt openapi/bilingual)")
        for doc in yaml.safe_load_all(open(os.path.join(crd_dir, f), encoding="utf-8")):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            labels = (doc.get("metadata") or {}).get("labels") or {}
            if labels.get("module") != MODULE or labels.get("heritage") != "deckhouse":
                # The CRD is generated from crates/api; the label belongs in its generator.
                warn(f"crds/{f}: CRD {doc['metadata']['name']} lacks labels heritage=deckhouse, "
                     f"module={MODULE} (dmt openapi/deckhouse-crds reports this as an error; "
                     "fix in the crates/api CRD generator)")
            check_enums(doc, f"crds/{f}")

    # docs: bilingual, no Cyrillic in English, front matter, fenced code with a language.
    docs = os.path.join(ROOT, "docs")
    if os.path.isdir(docs):
        for f in sorted(os.listdir(docs)):
            if not f.endswith(".md"):
                continue
            path = os.path.join(docs, f)
            text = open(path, encoding="utf-8").read()
            is_ru = f.endswith(".ru.md")
            if not is_ru:
                if not os.path.exists(os.path.join(docs, f[:-3] + ".ru.md")):
                    error(f"docs/{f}: no Russian twin docs/{f[:-3]}.ru.md")
                if CYRILLIC.search(text):
                    error(f"docs/{f}: Cyrillic in an English document")
            elif not os.path.exists(os.path.join(docs, f[:-6] + ".md")):
                error(f"docs/{f}: no English original")
            if not text.startswith("---\n"):
                error(f"docs/{f}: front matter missing")
            else:
                fm = yaml.safe_load(text.split("---\n", 2)[1])
                if not isinstance(fm, dict) or "title" not in fm:
                    error(f"docs/{f}: front matter needs a title")
                elif "lang" in fm:
                    error(f"docs/{f}: no lang key in front matter")
            in_code = False
            for n, line in enumerate(text.splitlines(), 1):
                if line.startswith("```"):
                    if not in_code and line.strip() == "```":
                        error(f"docs/{f}:{n}: fenced code block without a language")
                    in_code = not in_code
            if not text.endswith("\n"):
                error(f"docs/{f}: no trailing newline")
        if not os.path.exists(os.path.join(docs, "README.md")):
            error("docs/README.md is required")
        conf = os.path.join(docs, "CONFIGURATION.md")
        if os.path.exists(conf) and "<!-- SCHEMA -->" not in open(conf, encoding="utf-8").read():
            error("docs/CONFIGURATION.md: needs the <!-- SCHEMA --> marker")

    # No Cyrillic in yaml/json outside doc-ru and module.yaml (dmt no-cyrillic).
    for top in ("templates", "monitoring", "openapi", "images", "crds"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith((".yaml", ".yml", ".json", ".tpl")) or f.startswith("doc-ru-"):
                    continue
                p = os.path.join(dirpath, f)
                if CYRILLIC.search(open(p, encoding="utf-8").read()):
                    error(f"{os.path.relpath(p, ROOT)}: Cyrillic (dmt no-cyrillic)")

    # templates: no literal cluster.local (dmt templates/cluster-domain).
    for dirpath, _, files in os.walk(os.path.join(ROOT, "templates")):
        for f in files:
            p = os.path.join(dirpath, f)
            if "cluster.local" in open(p, encoding="utf-8").read():
                error(f"{os.path.relpath(p, ROOT)}: hard-coded cluster.local")

    # images: Dockerfile final stage distroless/scratch, intermediate stages pinned or $BASE_*.
    images = os.path.join(ROOT, "images")
    for name in sorted(os.listdir(images)) if os.path.isdir(images) else []:
        if "_" in name:
            error(f"images/{name}: image names must not contain '_'")
        df = os.path.join(images, name, "Dockerfile")
        if not os.path.exists(df):
            continue
        froms = [ln.split()[1] for ln in open(df, encoding="utf-8") if ln.upper().startswith("FROM ")]
        if not froms:
            error(f"images/{name}/Dockerfile: no FROM")
            continue
        if not (froms[-1] in ("scratch", "$BASE_DISTROLESS", "$BASE_ALT") or froms[-1].startswith("${BASE_DISTROLESS")):
            error(f"images/{name}/Dockerfile: the last FROM must be $BASE_DISTROLESS, $BASE_ALT or scratch")
        for fr in froms[:-1]:
            if not (fr.startswith("$BASE_") or fr.startswith("${BASE_") or "@sha256:" in fr):
                error(f"images/{name}/Dockerfile: stage FROM {fr} must use $BASE_* or a digest")
    return finish("static checks")


# ---------------------------------------------------------------- rendered manifests

ALLOWED_PRIORITY = {"system-node-critical", "system-cluster-critical", "cluster-medium", "cluster-low",
                    "cluster-critical", "staging", "standby", "develop", "production-high",
                    "production-medium", "production-low"}
POD_CONTROLLERS = {"Deployment", "DaemonSet", "StatefulSet"}


def mount_points():
    dirs = {"/sys", "/dev", "/proc", "/tmp", "/sys/fs/cgroup"}
    images = os.path.join(ROOT, "images")
    for name in os.listdir(images) if os.path.isdir(images) else []:
        p = os.path.join(images, name, "mount-points.yaml")
        if os.path.exists(p):
            mp = load_yaml(p) or {}
            dirs.update(mp.get("dirs") or [])
            dirs.update(mp.get("files") or [])
    return dirs


def check_rendered(docs, source):
    objs = [d for d in docs if isinstance(d, dict) and d.get("kind")]
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    sas = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in by_kind.get("ServiceAccount", [])}
    mps = mount_points()
    used_mounts = set()

    for o in objs:
        md = o.get("metadata") or {}
        ident = f"{source}: {o['kind']}/{md.get('namespace', '')}/{md.get('name')}"
        labels = md.get("labels") or {}
        if labels.get("heritage") != "deckhouse" or labels.get("module") != MODULE:
            error(f"{ident}: labels heritage=deckhouse and module={MODULE} are required")
        api = o.get("apiVersion", "")
        if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding") and api != "rbac.authorization.k8s.io/v1":
            error(f"{ident}: apiVersion {api}")
        if o["kind"] in POD_CONTROLLERS and api != "apps/v1":
            error(f"{ident}: apiVersion {api}")

        if o["kind"] in ("Role", "ClusterRole"):
            for rule in o.get("rules") or []:
                for key in ("apiGroups", "resources", "verbs"):
                    if "*" in (rule.get(key) or []):
                        error(f"{ident}: wildcard in {key} (dmt rbac/wildcards)")
            name = md["name"]
            if o["kind"] == "ClusterRole":
                if name.startswith("d8:user-authz:"):
                    ann = (md.get("annotations") or {}).get("user-authz.deckhouse.io/access-level")
                    if not ann:
                        error(f"{ident}: user-authz role without the access-level annotation")
                    elif name != f"d8:user-authz:{MODULE}:" + re.sub(r"(?<!^)([A-Z])", r"-\1", ann).lower():
                        error(f"{ident}: user-authz role name does not match its access level {ann}")
                elif not (name.startswith(f"d8:{MODULE}:") or name.startswith(f"d8:use:capability:module:{MODULE}:")
                          or name.startswith(f"d8:manage:permission:module:{MODULE}:")):
                    error(f"{ident}: ClusterRole name must start with d8:{MODULE}:")
            elif md.get("namespace") in ("kube-system", "default") and not name.startswith(f"d8:{MODULE}:"):
                error(f"{ident}: Role outside the module namespace must be named d8:{MODULE}:...")
            elif md.get("namespace") not in (NAMESPACE, "kube-system", "default"):
                error(f"{ident}: Role in an unexpected namespace")
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) not in sas:
                    error(f"{ident}: subject ServiceAccount {s.get('namespace')}/{s.get('name')} is not rendered")

        if o["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            ann = md.get("annotations") or {}
            if not any(k == "werf.io/weight" or k.startswith("werf.io/deploy-dependency-") for k in ann):
                error(f"{ident}: needs werf.io/weight or werf.io/deploy-dependency-* annotations")
            for wh in o.get("webhooks") or []:
                if not (wh.get("clientConfig") or {}).get("caBundle"):
                    error(f"{ident}: webhook {wh.get('name')} has no caBundle")
                if wh.get("failurePolicy") == "Fail" and any("pods" in (r.get("resources") or []) for r in wh.get("rules") or []):
                    error(f"{ident}: a Pod webhook must not use failurePolicy Fail")

        if o["kind"] == "Service":
            for p in (o.get("spec") or {}).get("ports") or []:
                if not isinstance(p.get("targetPort"), str):
                    error(f"{ident}: targetPort must be a named port (dmt templates/service-port)")

        if o["kind"] == "Namespace" and md["name"].startswith("d8-") and by_kind.get("PrometheusRule"):
            if labels.get("prometheus.deckhouse.io/rules-watcher-enabled") != "true":
                error(f"{ident}: needs label prometheus.deckhouse.io/rules-watcher-enabled=\"true\"")

        if o["kind"] not in POD_CONTROLLERS:
            continue
        spec = o.get("spec") or {}
        if spec.get("revisionHistoryLimit", 10) > 2:
            error(f"{ident}: revisionHistoryLimit must be <= 2")
        pod = (spec.get("template") or {}).get("spec") or {}
        pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if pod.get("priorityClassName") not in ALLOWED_PRIORITY:
            error(f"{ident}: priorityClassName {pod.get('priorityClassName')!r} is not allowed")
        psc = pod.get("securityContext") or {}
        ids = (psc.get("runAsUser"), psc.get("runAsGroup"))
        if not ((psc.get("runAsNonRoot") is True and ids in ((65534, 65534), (64535, 64535)))
                or (psc.get("runAsNonRoot") is False and ids == (0, 0))):
            error(f"{ident}: pod securityContext must run as 65534 or 64535 (dmt controller-security-context)")
        if pod.get("hostNetwork") and pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
            error(f"{ident}: hostNetwork needs dnsPolicy ClusterFirstWithHostNet")
        names = set()
        for c in pod.get("containers") or []:
            cid = f"{ident} container {c.get('name')}"
            if c["name"] in names:
                error(f"{cid}: duplicate name")
            names.add(c["name"])
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                error(f"{cid}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                error(f"{cid}: allowPrivilegeEscalation must be false")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                error(f"{cid}: seccompProfile RuntimeDefault is required")
            if c.get("imagePullPolicy") not in (None, "IfNotPresent"):
                error(f"{cid}: imagePullPolicy must be unset or IfNotPresent")
            image = c.get("image", "")
            if not image.startswith("registry.example.com/deckhouse@sha256:"):
                error(f"{cid}: image {image!r} does not come from global.modulesImages digests")
            req = ((c.get("resources") or {}).get("requests") or {})
            if not req.get("ephemeral-storage"):
                error(f"{cid}: resources.requests.ephemeral-storage is required")
            for probe in ("livenessProbe", "readinessProbe"):
                p = c.get(probe)
                handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if p and h in p]
                if len(handlers) != 1:
                    error(f"{cid}: {probe} needs exactly one handler")
            for port in c.get("ports") or []:
                if port.get("containerPort", 0) <= 1024:
                    error(f"{cid}: containerPort {port.get('containerPort')} must be > 1024")
            envs = [e["name"] for e in c.get("env") or []]
            if len(envs) != len(set(envs)):
                error(f"{cid}: duplicate env variables")
            for vm in c.get("volumeMounts") or []:
                used_mounts.add(vm["mountPath"])
                if vm["mountPath"] not in mps:
                    error(f"{cid}: mountPath {vm['mountPath']} is not declared in any images/*/mount-points.yaml")

        # PDB and VPA per controller.
        ns, name = md.get("namespace"), md["name"]
        if o["kind"] != "DaemonSet":
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                    if p["metadata"].get("namespace") == ns
                    and all(pod_labels.get(k) == v for k, v in (((p.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items())]
            if not pdbs:
                error(f"{ident}: no PodDisruptionBudget selects its pods")
            for p in pdbs:
                if any(k.startswith("helm.sh/hook") for k in (p["metadata"].get("annotations") or {})):
                    error(f"{ident}: PDB must not be a helm hook")
        vpas = [v for v in by_kind.get("VerticalPodAutoscaler", [])
                if v["metadata"].get("namespace") == ns and (v.get("spec") or {}).get("targetRef", {}).get("name") == name
                and (v.get("spec") or {}).get("targetRef", {}).get("kind") == o["kind"]]
        if not vpas:
            error(f"{ident}: no VerticalPodAutoscaler")
        for v in vpas:
            if ((v.get("spec") or {}).get("updatePolicy") or {}).get("updateMode") == "Auto":
                error(f"{ident}: VPA updateMode Auto is not allowed")
            policies = {p.get("containerName") for p in ((v["spec"].get("resourcePolicy") or {}).get("containerPolicies") or [])
                        if (p.get("minAllowed") and p.get("maxAllowed"))}
            for c in pod.get("containers") or []:
                if c["name"] not in policies:
                    error(f"{ident}: VPA lacks minAllowed/maxAllowed for container {c['name']}")

    return used_mounts


def cmd_rendered(files):
    used = set()
    for f in files:
        with open(f, encoding="utf-8") as fh:
            docs = list(yaml.safe_load_all(fh))
        used |= check_rendered(docs, os.path.basename(f))
    # Every declared mount point is used somewhere (dmt templates/mount-points).
    images = os.path.join(ROOT, "images")
    for name in os.listdir(images) if os.path.isdir(images) else []:
        p = os.path.join(images, name, "mount-points.yaml")
        if os.path.exists(p):
            for d in (load_yaml(p) or {}).get("dirs") or []:
                if d not in used:
                    error(f"images/{name}/mount-points.yaml: {d} is not mounted by any rendered pod")
    return finish(f"rendered checks ({len(files)} render(s))")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "cases":
        return cmd_cases()
    if cmd == "settings-sets":
        out = argv[2]
        os.makedirs(out, exist_ok=True)
        for name, settings in settings_sets().items():
            with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
                json.dump(settings, f)
        return 0
    if cmd == "values":
        with open(argv[2], encoding="utf-8") as f:
            settings = yaml.safe_load(f) or {}
        try:
            values = module_values(settings)
        except ValueError as e:
            print(f"error: {e}")
            return 1
        with open(argv[3], "w", encoding="utf-8") as f:
            yaml.safe_dump(values, f)
        return 0
    if cmd == "static":
        return cmd_static()
    if cmd == "rendered":
        return cmd_rendered(argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
