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
"""Module bundle checks that need no cluster and that dmt (run beside them by hack/module-lint.sh)
does not make: the settings schema against its case tests and documented examples, values for
rendering, agreement between files dmt reads separately, and dmt's manifest rules applied to every
documented settings example (dmt renders the chart once).

Subcommands (used by hack/module-lint.sh):
  cases                      run openapi/openapi-case-tests.yaml against the schemas
  settings-sets DIR          write one settings file per documented example (plus defaults) to DIR
  values SETTINGS OUT [INTERNAL]
                             module values for Helm: settings + schema defaults + fake hook values
                             (INTERNAL: a JSON file of hook values to use on top of the fake ones)
  static                     repository checks dmt lacks (names, settings docs, images vs chart, oss.yaml,
                             the docs' reason tables and settings defaults against the code and schema)
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
    # The hook copies the Secret, or records why it could not (then there is no data to render).
    if https.get("mode") == "CustomCertificate" and "customCertificateError" not in values["internal"]:
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
#
# dmt lint (hack/module-lint.sh runs it) checks the repository: module.yaml, .helmignore, openapi
# enums and high availability, CRD labels and doc-ru twins, docs (bilingual, front matter,
# markdownlint), Cyrillic, cluster.local, werf image names. What is left here is what dmt does not
# check: names that must agree between files, settings documentation, and the build definitions
# against the chart and the lockfile.

WERF_IMAGE_RE = re.compile(r"^image:\s*(.+?)\s*$", re.M)


def werf_images():
    """{image directory: (image name as werf builds it, final)} from images/*/werf.inc.yaml.
    The name is `{{ .ModuleNamePrefix }}{{ .ImageName }}` with an empty prefix, i.e. the directory."""
    out = {}
    images = os.path.join(ROOT, "images")
    for name in sorted(os.listdir(images)) if os.path.isdir(images) else []:
        path = os.path.join(images, name, "werf.inc.yaml")
        if not os.path.isfile(path):
            error(f"images/{name}: no werf.inc.yaml (the module's images are built by werf)")
            continue
        text = open(path, encoding="utf-8").read()
        docs = [d for d in re.split(r"(?m)^---\s*$", text) if WERF_IMAGE_RE.search(d)]
        if len(docs) != 1:
            error(f"images/{name}/werf.inc.yaml: expected one image, found {len(docs)}")
            continue
        image = WERF_IMAGE_RE.search(docs[0]).group(1)
        image = image.replace("{{ .ModuleNamePrefix }}", "").replace("{{ .ImageName }}", name)
        final = not re.search(r"(?m)^final:\s*false\s*$", docs[0])
        out[name] = (image, final)
    return out


def template_images():
    """Image names the chart asks helm_lib_module_image for, with the files asking."""
    used = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "templates")):
        for f in files:
            p = os.path.join(dirpath, f)
            for m in re.finditer(r'helm_lib_module_image"\s*\(list\s+\.\s+"([^"]+)"', open(p, encoding="utf-8").read()):
                used.setdefault(m.group(1), set()).add(os.path.relpath(p, ROOT))
    return used


def check_images(built, used):
    """Every image the chart references is a final werf image (only those get a digest in
    images_digests.json), and every final image is referenced (or it would be built for nothing)."""
    finals = {camel(image) for image, final in built.values() if final}
    for name, files in sorted(used.items()):
        if name not in finals:
            error(f"{', '.join(sorted(files))}: image {name!r} is not a final image of images/*/werf.inc.yaml, "
                  "so it gets no digest")
    for d, (image, final) in sorted(built.items()):
        if image != d:
            error(f"images/{d}/werf.inc.yaml: image {image!r} must be named after its directory")
        if final and camel(image) not in used:
            error(f"images/{d}: final image {camel(image)!r} is not used by any template")


def camel(name):
    """The digest key of an image: images-digests.yaml's `camelcase | untitle`."""
    parts = re.split(r"[-_]", name)
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def lock_versions():
    """{crate: {versions}} from Cargo.lock."""
    out = {}
    text = open(os.path.join(ROOT, "Cargo.lock"), encoding="utf-8").read()
    for m in re.finditer(r'^name = "([^"]+)"\nversion = "([^"]+)"', text, re.M):
        out.setdefault(m.group(1), set()).add(m.group(2))
    return out


def workspace_rust_version():
    workspace = open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8").read()
    return re.search(r'(?m)^rust-version = "([^"]+)"', workspace).group(1)


# oss.yaml ids that are not crates, and where their version comes from.
OSS_NOT_CRATES = {"openssl", "glibc", "rust-std"}


def check_oss(projects, locked, rust_version):
    """oss.yaml names what the images carry at the versions the build uses: a crate's is the one
    Cargo.lock pins, the Rust standard library's the workspace's rust-version."""
    for p in projects:
        pid, version = p.get("id"), str(p.get("version", ""))
        if pid == "rust-std":
            if not version.startswith(rust_version + ".") and version != rust_version:
                error(f"oss.yaml: rust-std {version} but the workspace builds with Rust {rust_version}")
        elif pid not in OSS_NOT_CRATES:
            if pid not in locked:
                error(f"oss.yaml: {pid} is not in Cargo.lock (the images do not carry it)")
            elif version not in locked[pid]:
                error(f"oss.yaml: {pid} {version} but Cargo.lock pins {', '.join(sorted(locked[pid]))}")


def cmd_static():
    m = load_yaml(os.path.join(ROOT, "module.yaml"))
    if m.get("name") != MODULE or m.get("namespace") != NAMESPACE:
        error(f"module.yaml: name and namespace must be {MODULE} and {NAMESPACE}")
    if not (m.get("descriptions") or {}).get("ru"):
        error("module.yaml: descriptions.ru is required (dmt only asks for en)")
    chart = load_yaml(os.path.join(ROOT, "Chart.yaml"))
    if chart.get("name") != MODULE:
        error("Chart.yaml: name must be the module name")

    # Every setting documented in both languages, every top-level one with an example (the render
    # sets below come from those examples).
    cfg = load_yaml(os.path.join(ROOT, "openapi/config-values.yaml"))
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

    # docs: a title for the site's navigation, and the schema marker the settings page is rendered at.
    docs = os.path.join(ROOT, "docs")
    for f in sorted(os.listdir(docs)) if os.path.isdir(docs) else []:
        if not f.endswith(".md"):
            continue
        text = open(os.path.join(docs, f), encoding="utf-8").read()
        fm = yaml.safe_load(text.split("---\n", 2)[1]) if text.startswith("---\n") else None
        if not isinstance(fm, dict) or "title" not in fm:
            error(f"docs/{f}: front matter needs a title")
    for f in ("CONFIGURATION.md", "CONFIGURATION.ru.md"):
        conf = os.path.join(docs, f)
        if os.path.exists(conf) and "<!-- SCHEMA -->" not in open(conf, encoding="utf-8").read():
            error(f"docs/{f}: needs the <!-- SCHEMA --> marker")

    # Docs that restate the code and the schema.
    check_docs(repo_doc_facts())

    # Build definitions against the chart and the lockfile.
    check_images(werf_images(), template_images())
    check_oss(load_yaml(os.path.join(ROOT, "oss.yaml")) or [], lock_versions(), workspace_rust_version())
    return finish("static checks")


# ---------------------------------------------------------------- docs against the code
#
# Tables in the docs that restate facts of the code or the schema, each introduced by a marker line
# `<!-- lint: NAME -->`, are compared with their source, in both languages, so a reason or a
# setting cannot be added, renamed or dropped on one side only.

DOC_PAIRS = ("USAGE", "CONFIGURATION")
NO_DEFAULT = "—"


def marked_table(text, marker):
    """Rows (lists of cell texts) of the table after `<!-- lint: marker -->`, without the header and
    the separator, or None when the marker is absent."""
    lines = text.splitlines()
    try:
        i = lines.index(f"<!-- lint: {marker} -->")
    except ValueError:
        return None
    rows = []
    for line in lines[i + 1:]:
        if not line.startswith("|"):
            if rows or line.strip():
                break
            continue
        # A `\|` inside a cell is an escaped pipe, not a separator.
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows[2:]


def code_span(cell):
    m = re.fullmatch(r"`([^`]*)`", cell.strip())
    return m.group(1) if m else None


def rust_reasons(conditions_rs):
    """{CONSTANT: "Reason"} of `pub mod reason` in crates/api/src/conditions.rs."""
    m = re.search(r"pub mod reason \{(.*?)\n\}", conditions_rs, re.S)
    if not m:
        return {}
    return dict(re.findall(r'pub const ([A-Z_]+): &str = "([A-Za-z]+)";', m.group(1)))


def without_tests(rs):
    """Rust source without its trailing `#[cfg(test)]` module (this repository keeps tests last)."""
    i = rs.find("#[cfg(test)]")
    return rs if i < 0 else rs[:i]


def reasons_set(controller_sources):
    """Reason constants the controller sets outside tests, and those it sets with Ready=True."""
    used, true = set(), set()
    for path, rs in controller_sources.items():
        if "/tests" in path or path.endswith("tests.rs"):
            continue
        rs = without_tests(rs)
        used |= set(re.findall(r"reason::([A-Z_]+)", rs))
        true |= set(re.findall(r"\(true,\s*reason::([A-Z_]+)", rs))
    return used, true


def check_reason_table(doc, rows, reasons, used, true):
    """The Ready reason table lists exactly the reasons of svdm-api, with the right Ready value; a
    reason the controller never sets must say so."""
    if rows is None:
        error(f"{doc}: no Ready reason table (<!-- lint: ready-reasons -->)")
        return
    documented = {}
    for cells in rows:
        name = code_span(cells[0]) if cells else None
        if not name or len(cells) < 3:
            error(f"{doc}: Ready reason table row {cells!r} is not `Reason` | True/False | meaning")
            continue
        documented[name] = cells
    by_name = {v: k for k, v in reasons.items()}
    for name in sorted(set(by_name) - set(documented)):
        error(f"{doc}: Ready reason {name} (crates/api/src/conditions.rs) is missing from the reason table")
    for name in sorted(set(documented) - set(by_name)):
        error(f"{doc}: the reason table lists {name}, which crates/api/src/conditions.rs does not define")
    for name, cells in sorted(documented.items()):
        const = by_name.get(name)
        if const is None:
            continue
        want = "True" if const in true else "False"
        if cells[1] != want:
            error(f"{doc}: the reason table says Ready={cells[1]} for {name}; the controller sets {want}")
        if const not in used and "not set by the controller" not in cells[2] and "контроллер не устанавливает" not in cells[2]:
            error(f"{doc}: {name} is never set by crates/controller; say so in its row or remove the constant")


def webhook_denials(validate_rs):
    """Reasons the webhook denies with (crates/webhook/src/validate.rs, outside its tests)."""
    return set(re.findall(r'(?:deny\(|Err\(\()\s*"([A-Z][A-Za-z]+)"', without_tests(validate_rs)))


def check_admission_table(doc, rows, denials):
    if rows is None:
        error(f"{doc}: no admission error table (<!-- lint: admission-reasons -->)")
        return
    documented = {code_span(cells[-1]) for cells in rows if cells}
    for name in sorted(denials - documented):
        error(f"{doc}: the webhook denies with reason {name}, which the admission error table lacks")
    for name in sorted(documented - denials - {None}):
        error(f"{doc}: the admission error table lists {name}, which crates/webhook/src/validate.rs never denies with")


def settings_leaves(schema, prefix=""):
    """{path: property} of every setting a user sets as one value: properties without sub-properties,
    and objects whose default is a whole value (not `{}` filled from their members)."""
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        path = prefix + name
        if prop.get("properties") and prop.get("default", {}) == {}:
            out.update(settings_leaves(prop, path + "."))
        else:
            out[path] = prop
    return out


def check_defaults_table(doc, rows, leaves):
    """The settings table names every setting once, with the schema's default (`—`: none)."""
    if rows is None:
        error(f"{doc}: no settings table (<!-- lint: settings-defaults -->)")
        return
    seen = set()
    for cells in rows:
        path = code_span(cells[0]) if cells else None
        if not path or len(cells) < 2:
            error(f"{doc}: settings table row {cells!r} is not `setting` | default | ...")
            continue
        if path not in leaves:
            error(f"{doc}: the settings table lists {path}, which openapi/config-values.yaml does not have")
            continue
        seen.add(path)
        prop = leaves[path]
        cell = cells[1].strip()
        if cell == NO_DEFAULT:
            if "default" in prop:
                error(f"{doc}: {path} has no default in the table, but the schema's is {prop['default']!r}")
            continue
        text = code_span(cell)
        if text is None:
            error(f"{doc}: the default of {path} must be a code span or {NO_DEFAULT}, not {cell!r}")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            error(f"{doc}: the default of {path} ({text}) is not YAML: {e}")
            continue
        if "default" not in prop:
            error(f"{doc}: the table gives {path} the default {text}, but the schema has none")
        elif value != prop["default"]:
            error(f"{doc}: the table gives {path} the default {text}, but the schema's is {prop['default']!r}")
    for path in sorted(set(leaves) - seen):
        error(f"{doc}: setting {path} is missing from the settings table")


def check_prose_defaults(doc, text, leaves):
    """`setting` (default `x`) anywhere in prose agrees with the schema."""
    for path, value in re.findall(r"`([A-Za-z][A-Za-z.]*)`[^`\n(]{0,40}\((?:default|по умолчанию) `([^`]*)`", text):
        if path in leaves and "default" in leaves[path]:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            if parsed != leaves[path]["default"]:
                error(f"{doc}: says {path} defaults to {value}, but the schema's default is {leaves[path]['default']!r}")


def repo_doc_facts():
    """What the docs checks compare: the docs' texts and the code and schema they restate."""
    def read(rel):
        return open(os.path.join(ROOT, rel), encoding="utf-8").read()

    docs = {}
    for base in DOC_PAIRS:
        for suffix in (".md", ".ru.md"):
            rel = f"docs/{base}{suffix}"
            if os.path.exists(os.path.join(ROOT, rel)):
                docs[rel] = read(rel)
    controller = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "crates/controller/src")):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(dirpath, f)
                controller[os.path.relpath(p, ROOT)] = open(p, encoding="utf-8").read()
    return {
        "docs": docs,
        "reasons": rust_reasons(read("crates/api/src/conditions.rs")),
        "controller": controller,
        "validate": read("crates/webhook/src/validate.rs"),
        "schema": load_yaml(os.path.join(ROOT, "openapi/config-values.yaml")),
    }


def check_docs(facts):
    reasons = facts["reasons"]
    if not reasons:
        error("crates/api/src/conditions.rs: no `pub mod reason` constants found")
    used, true = reasons_set(facts["controller"])
    denials = webhook_denials(facts["validate"])
    if not denials:
        error("crates/webhook/src/validate.rs: no denial reasons found")
    leaves = settings_leaves(facts["schema"])
    for doc, text in sorted(facts["docs"].items()):
        if "/USAGE" in doc:
            check_reason_table(doc, marked_table(text, "ready-reasons"), reasons, used, true)
            check_admission_table(doc, marked_table(text, "admission-reasons"), denials)
        if "/CONFIGURATION" in doc:
            check_defaults_table(doc, marked_table(text, "settings-defaults"), leaves)
        check_prose_defaults(doc, text, leaves)


# ---------------------------------------------------------------- rendered manifests
#
# The same manifest rules as dmt's container, rbac and templates linters, kept because dmt renders
# the chart once, with values it generates, while these run over every render of hack/module-lint.sh:
# the defaults, each x-examples entry alone, all of them together and every ModuleConfig in docs/
# (publishing, custom certificates and placement only appear in some). Plus two dmt lacks: webhooks
# carry a caBundle, and a Pod webhook never fails closed.

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
        internal = None
        if len(argv) > 4:
            with open(argv[4], encoding="utf-8") as f:
                internal = {**FAKE_INTERNAL, **json.load(f)}
        try:
            values = module_values(settings, internal)
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
