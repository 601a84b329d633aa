//! Kubernetes label selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
//! joined by commas (all must hold).

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: String,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let fail = |reason: String| SelectorError { selector: input.to_string(), reason };
        let mut requirements = Vec::new();
        for term in split_terms(input).map_err(&fail)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).map_err(&fail)?);
        }
        Ok(Self { requirements, source: input.trim().to_string() })
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key));
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, values) => get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Splits on commas that are not inside a `( … )` value set.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(valid_key(key.trim())?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotIn(valid_key(key.trim())?, vec![valid_value(value.trim())?]));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::In(valid_key(key.trim())?, vec![valid_value(value.trim())?]));
    }
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(valid_key(key)?));
    }
    let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
        (true, set)
    } else if let Some(set) = rest.strip_prefix("in") {
        (false, set)
    } else {
        return Err(format!("expected '=', '!=', 'in' or 'notin' after {key:?}"));
    };
    let set = set.trim();
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a value set like (a,b) after {key:?}"))?;
    let values = inner.split(',').map(|v| valid_value(v.trim())).collect::<Result<Vec<_>, _>>()?;
    let key = valid_key(key)?;
    Ok(if negated { Requirement::NotIn(key, values) } else { Requirement::In(key, values) })
}

fn valid_key(key: &str) -> Result<String, String> {
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    let ok = !name.is_empty()
        && name.len() <= 63
        && key.len() <= 317
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn valid_value(value: &str) -> Result<String, String> {
    let ok = value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selector_cases() {
        let l = labels(&[("app", "traefik"), ("tier", "web")]);
        let cases = [
            ("", true),
            ("app=traefik", true),
            ("app==traefik", true),
            ("app=nginx", false),
            ("app!=nginx", true),
            ("app!=traefik", false),
            ("missing!=x", true),
            ("app in (nginx, traefik)", true),
            ("app in (nginx)", false),
            ("app notin (nginx)", true),
            ("app notin (traefik,x)", false),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=traefik,tier=web", true),
            ("app=traefik, tier=db", false),
            ("app in (traefik,x),!missing", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(Some(&l)), expected, "selector {selector:?}");
        }
        assert!(LabelSelector::parse("app=traefik").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
    }

    #[test]
    fn selector_rejects_garbage() {
        for bad in ["app in (a", "app in a", "a b c", "=x", "app=x y", "bad key!=1"] {
            let err = LabelSelector::parse(bad).unwrap_err();
            assert!(err.to_string().contains("invalid label selector"), "{bad}: {err}");
        }
    }
}
