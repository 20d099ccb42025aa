//! Response projection (RFC 7644 §3.9 and RFC 7643 §2.2 `returned`): which attributes of a
//! resource a response carries, given the request's `attributes` / `excludedAttributes`.
//!
//! - `returned: always` (`id`, `schemas`) is always kept; `never` (`password`) never is.
//! - With `attributes`, only the named attributes (and `always` ones) are kept; naming a
//!   sub-attribute (`name.givenName`, `emails.value`) keeps just it inside its parent; naming an
//!   extension URN keeps the whole extension.
//! - Otherwise `default` attributes are kept and `request` ones dropped, minus
//!   `excludedAttributes` (attributes, sub-attributes or whole extensions).
//!
//! Names are matched case-insensitively and may be URN-qualified; unknown names are ignored.
//! Keys of the resource unknown to the schema are treated as `returned: default`.

use serde_json::{Map, Value};

use crate::filter::AttrSelector;
use crate::schema::{AttributeDef, ResourceType, Returned, find_top_level, resolve};

/// A resolved selector: (extension URN or `None` for core, attribute, sub-attribute).
#[derive(Debug, Clone, Copy)]
enum Sel {
    Schema(&'static str),
    Attr(Option<&'static str>, &'static str, Option<&'static str>),
}

fn resolve_all(rt: ResourceType, list: &[AttrSelector]) -> Vec<Sel> {
    list.iter()
        .filter_map(|s| match s {
            AttrSelector::Schema(urn) => rt.extension(urn).map(|e| Sel::Schema(e.id)),
            AttrSelector::Attr(p) => {
                resolve(rt, p).map(|r| Sel::Attr(r.extension, r.attr.name, r.sub.map(|s| s.name)))
            }
        })
        .collect()
}

/// What a selector list says about one attribute.
enum Mention {
    None,
    Whole,
    Subs(Vec<&'static str>),
}

fn mention(sels: &[Sel], ext: Option<&str>, attr: &str) -> Mention {
    let mut subs = Vec::new();
    for s in sels {
        match *s {
            Sel::Schema(u) if Some(u) == ext => return Mention::Whole,
            Sel::Attr(e, a, sub) if e == ext && a == attr => match sub {
                None => return Mention::Whole,
                Some(sub) => subs.push(sub),
            },
            _ => {}
        }
    }
    if subs.is_empty() {
        Mention::None
    } else {
        Mention::Subs(subs)
    }
}

/// Applies `attributes` (if non-empty) or else `excludedAttributes` to `resource`.
pub fn project(
    rt: ResourceType,
    resource: &Value,
    attributes: &[AttrSelector],
    excluded: &[AttrSelector],
) -> Value {
    let Some(obj) = resource.as_object() else {
        return resource.clone();
    };
    let include = resolve_all(rt, attributes);
    let exclude = resolve_all(rt, excluded);
    let mut out = Map::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") {
            out.insert(k.clone(), v.clone());
            continue;
        }
        if let Some(ext) = rt.extension(k) {
            if let Some(o) = v.as_object() {
                let projected = project_container(rt, Some(ext.id), o, attributes, &include, &exclude);
                if !projected.is_empty() {
                    out.insert(k.clone(), Value::Object(projected));
                }
            }
            continue;
        }
        let mut single = Map::new();
        single.insert(k.clone(), v.clone());
        out.extend(project_container(
            rt, None, &single, attributes, &include, &exclude,
        ));
    }
    Value::Object(out)
}

fn project_container(
    rt: ResourceType,
    ext: Option<&'static str>,
    obj: &Map<String, Value>,
    attributes: &[AttrSelector],
    include: &[Sel],
    exclude: &[Sel],
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        let def = find_top_level(rt, ext, k).map(|(_, d)| d);
        let kept = match def {
            Some(d) => project_attr(d, ext, v, !attributes.is_empty(), include, exclude),
            // Unknown to the schema: returned by default.
            None if attributes.is_empty() => Some(v.clone()),
            None => None,
        };
        if let Some(v) = kept {
            out.insert(k.clone(), v);
        }
    }
    out
}

fn project_attr(
    def: &AttributeDef,
    ext: Option<&str>,
    v: &Value,
    has_include: bool,
    include: &[Sel],
    exclude: &[Sel],
) -> Option<Value> {
    match def.returned {
        Returned::Never => return None,
        Returned::Always => return Some(filter_subs(def, v, &|_| true)),
        _ => {}
    }
    if has_include {
        return match mention(include, ext, def.name) {
            Mention::None => None,
            Mention::Whole => Some(filter_subs(def, v, &|s| s.returned != Returned::Request)),
            Mention::Subs(names) => {
                let kept = filter_subs(def, v, &|s| {
                    s.returned == Returned::Always || names.contains(&s.name)
                });
                crate::json::is_present(&kept).then_some(kept)
            }
        };
    }
    if def.returned == Returned::Request {
        return None;
    }
    match mention(exclude, ext, def.name) {
        Mention::Whole => None,
        Mention::None => Some(filter_subs(def, v, &|s| s.returned != Returned::Request)),
        Mention::Subs(names) => {
            let kept = filter_subs(def, v, &|s| {
                s.returned == Returned::Always
                    || (s.returned != Returned::Request && !names.contains(&s.name))
            });
            crate::json::is_present(&kept).then_some(kept)
        }
    }
}

/// Keeps the sub-attributes of a complex value (or of each element) for which `keep` holds;
/// `returned: never` sub-attributes are always dropped. Non-complex values pass through.
fn filter_subs(def: &AttributeDef, v: &Value, keep: &dyn Fn(&AttributeDef) -> bool) -> Value {
    if def.sub_attributes.is_empty() {
        return v.clone();
    }
    let one = |o: &Map<String, Value>| -> Value {
        let mut m = Map::new();
        for (k, x) in o {
            let retain = match def.sub(k) {
                Some(s) => s.returned != Returned::Never && keep(s),
                None => keep(def),
            };
            if retain {
                m.insert(k.clone(), x.clone());
            }
        }
        Value::Object(m)
    };
    match v {
        Value::Object(o) => one(o),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| i.as_object().map_or_else(|| i.clone(), one))
                .filter(|i| !i.as_object().is_some_and(Map::is_empty))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
