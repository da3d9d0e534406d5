//! Mutations of a `GoServer` spec drawn from the CRD's own schema, as Acto
//! tests operators: walking the OpenAPI schema next to a seed spec, every
//! field the seed sets is deleted and set to other values, and every field
//! its objects leave out is added. Each mutation says whether the schema
//! alone allows it (`valid`): values inside the bounds, enum members,
//! strings from a table of samples that match the schema's patterns; or
//! breaks it: one past a bound, the wrong type, a pattern or an enum
//! violated, a required field deleted, one item too many.
//!
//! Kubernetes types passed through whole (affinity, tolerations, topology
//! spread constraints, the HPA's behavior) are the apiserver's to check and
//! are mutated only as a whole (deleted), not field by field.

use serde_json::{Value, json};

/// One edit of the seed spec.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// The field, as the apiserver names it in errors: `spec.env[0].name`.
    pub path: String,
    /// What was done to it, for messages.
    pub what: String,
    /// The whole spec after the edit.
    pub spec: Value,
    /// Whether the schema allows the result.
    pub valid: bool,
}

/// Subtrees passed through to Kubernetes types whole.
const PASSED_THROUGH: &[&str] = &[
    "spec.affinity",
    "spec.tolerations",
    "spec.topologySpreadConstraints",
    "spec.autoscaling.behavior",
    "spec.resources.claims",
];

/// Every mutation of `seed` (a spec) that `schema` (the spec's schema)
/// describes.
pub fn mutations(schema: &Value, seed: &Value) -> Vec<Mutation> {
    let mut out = Vec::new();
    walk(schema, seed, &mut Vec::new(), seed, &mut out);
    out
}

/// A step of a path inside the spec.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    let mut out = "spec".to_owned();
    for step in path {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// `seed` with the value at `path` replaced (`Some`) or removed (`None`).
fn edit(seed: &Value, path: &[Step], new: Option<Value>) -> Value {
    let mut spec = seed.clone();
    let (last, parents) = path.split_last().expect("a field below spec");
    let mut node = &mut spec;
    for step in parents {
        node = match step {
            Step::Key(k) => &mut node[k.as_str()],
            Step::Index(i) => &mut node[*i],
        };
    }
    match (last, new) {
        (Step::Key(k), Some(v)) => node[k.as_str()] = v,
        (Step::Key(k), None) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(k);
            }
        }
        (Step::Index(i), Some(v)) => node[*i] = v,
        (Step::Index(i), None) => {
            if let Some(items) = node.as_array_mut() {
                items.remove(*i);
            }
        }
    }
    spec
}

fn walk(
    schema: &Value,
    value: &Value,
    path: &mut Vec<Step>,
    seed: &Value,
    out: &mut Vec<Mutation>,
) {
    if PASSED_THROUGH.contains(&render(path).as_str()) {
        return;
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            path.push(Step::Key(name.clone()));
            let here = render(path);
            let passed_through = PASSED_THROUGH.contains(&here.as_str());
            match value.get(name) {
                Some(current) => {
                    out.push(Mutation {
                        path: here.clone(),
                        what: "deleted".to_owned(),
                        spec: edit(seed, path, None),
                        valid: !required.contains(&name.as_str()),
                    });
                    if !passed_through {
                        scalar_mutations(child, path, seed, out);
                        walk(child, current, path, seed, out);
                    }
                }
                None if !passed_through => {
                    for sample in valid_samples(child, &here) {
                        out.push(Mutation {
                            path: here.clone(),
                            what: format!("added as {sample}"),
                            spec: edit(seed, path, Some(sample)),
                            valid: true,
                        });
                    }
                }
                None => {}
            }
            path.pop();
        }
    }
    if let Some(map) = value
        .as_object()
        .filter(|_| schema["additionalProperties"].is_object())
    {
        let values = &schema["additionalProperties"];
        for key in map.keys() {
            path.push(Step::Key(key.clone()));
            scalar_mutations(values, path, seed, out);
            path.pop();
        }
        // A key no Kubernetes map takes (labels, annotations, selectors,
        // ConfigMap data, resource names): the map is the field to name.
        let map_path = render(path);
        if let Some(sample) = valid_samples(values, &map_path).into_iter().next() {
            path.push(Step::Key("bad key!".to_owned()));
            out.push(Mutation {
                path: map_path,
                what: format!("given the key \"bad key!\" = {sample}"),
                spec: edit(seed, path, Some(sample)),
                valid: false,
            });
            path.pop();
        }
        path.push(Step::Key("fuzz-key".to_owned()));
        let here = render(path);
        for sample in valid_samples(values, &here) {
            out.push(Mutation {
                path: here.clone(),
                what: format!("added as {sample}"),
                spec: edit(seed, path, Some(sample)),
                valid: true,
            });
        }
        path.pop();
    }
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        let here = render(path);
        if let (Some(max), Some(first)) = (schema["maxItems"].as_u64(), items.first()) {
            let too_many: Vec<Value> = (0..=max).map(|_| first.clone()).collect();
            out.push(Mutation {
                path: here.clone(),
                what: format!("{} items", max + 1),
                spec: edit(seed, path, Some(Value::Array(too_many))),
                valid: false,
            });
        }
        out.push(Mutation {
            path: here,
            what: "emptied".to_owned(),
            spec: edit(seed, path, Some(json!([]))),
            valid: schema["minItems"].as_u64().unwrap_or(0) == 0,
        });
        for (i, item) in items.iter().enumerate() {
            path.push(Step::Index(i));
            walk(item_schema, item, path, seed, out);
            path.pop();
        }
    }
}

/// The value mutations of the scalar at `path` (present in the seed).
fn scalar_mutations(schema: &Value, path: &[Step], seed: &Value, out: &mut Vec<Mutation>) {
    let here = render(path);
    for (samples, valid) in [
        (valid_samples(schema, &here), true),
        (invalid_samples(schema), false),
    ] {
        for sample in samples {
            out.push(Mutation {
                path: here.clone(),
                what: format!("set to {}", shorten(&sample)),
                spec: edit(seed, path, Some(sample)),
                valid,
            });
        }
    }
}

fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!("{}… ({} characters)", &text[..30], text.len())
    } else {
        text
    }
}

/// Values a scalar field accepts. Strings come from a table keyed by the
/// schema's pattern, so that they match it.
fn valid_samples(schema: &Value, path: &str) -> Vec<Value> {
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().filter(|v| !v.is_null()).cloned().collect();
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return if path.starts_with("spec.resources") {
            vec![json!("250m"), json!(2)]
        } else {
            vec![json!("50%"), json!(1)]
        };
    }
    match schema["type"].as_str() {
        Some("integer") => {
            let min = bound(&schema["minimum"]).unwrap_or(0);
            let max = bound(&schema["maximum"]).unwrap_or(min + 10);
            let mut values = vec![min, max, min + (max - min) / 2];
            values.dedup();
            values.into_iter().map(Value::from).collect()
        }
        Some("number") => vec![json!(0.5)],
        Some("boolean") => vec![json!(true), json!(false)],
        Some("string") => vec![Value::String(string_sample(schema))],
        _ => Vec::new(),
    }
}

/// A bound of an integer field: schemars writes them as floats (`1.0`).
#[allow(clippy::cast_possible_truncation)]
fn bound(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
}

fn string_sample(schema: &Value) -> String {
    let pattern = schema["pattern"].as_str().unwrap_or_default();
    let sample = match pattern {
        "" => "fuzz value",
        "^/" => "/fuzz",
        "^https?://" => "http://127.0.0.1:9/fuzz",
        // Gantry's, the Gateway API's and Prometheus' durations.
        "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
        | "^([0-9]{1,5}(h|m|s|ms)){1,4}$"
        | "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$" => {
            "1m30s"
        }
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" => "fuzz-label",
        // An allowed change of a compared metric.
        "^[0-9]+(\\.[0-9]+)?%?$" => "12.5%",
        "^[-._a-zA-Z][-._a-zA-Z0-9]*$" => "FUZZ_NAME",
        "^[-._a-zA-Z0-9]+$" => "fuzz.key",
        "^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$" => "fuzz_metric",
        "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" => {
            "fuzz.example.com"
        }
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" => "fuzz-name",
        other => panic!("no sample string for the pattern {other}: add one to the table"),
    };
    sample.to_owned()
}

/// Values the schema refuses for a scalar field.
fn invalid_samples(schema: &Value) -> Vec<Value> {
    if schema["enum"].is_array() {
        return vec![json!("NotAValue"), json!(7)];
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return vec![json!(true)];
    }
    match schema["type"].as_str() {
        Some("integer") => {
            let mut values = vec![json!("seven")];
            if let Some(min) = bound(&schema["minimum"]) {
                values.push(json!(min - 1));
            }
            if let Some(max) = bound(&schema["maximum"]) {
                values.push(json!(max + 1));
            }
            values
        }
        Some("number") => vec![json!("half")],
        Some("boolean") => vec![json!("yes")],
        Some("string") => {
            let mut values = vec![json!(42)];
            if schema["minLength"].as_u64().is_some_and(|m| m > 0) {
                values.push(json!(""));
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                // The sample's own first character, repeated: still
                // matching any pattern, only too long.
                let c = string_sample(schema).chars().next().unwrap_or('a');
                let c = if c == '/' { 'a' } else { c };
                let mut long = string_sample(schema);
                #[allow(clippy::cast_possible_truncation)]
                long.extend(std::iter::repeat_n(c, max as usize));
                values.push(Value::String(long));
            }
            if schema["pattern"].is_string() {
                values.push(json!("Not Valid!"));
            }
            values
        }
        _ => Vec::new(),
    }
}
