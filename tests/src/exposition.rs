//! A strict parser of the Prometheus text format (0.0.4) that nodes answer at `/metrics`,
//! for the tests that read their figures.

use std::collections::BTreeMap;

/// One sample of an exposition: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The metric name (a histogram's with its `_bucket`, `_sum` or `_count`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition: each family's type and help, and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Each family's type.
    pub types: BTreeMap<String, String>,
    /// Each family's help.
    pub helps: BTreeMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the Prometheus text format (0.0.4) strictly: every line is a `# HELP`, a
    /// `# TYPE` or a sample `name{label="value",...} value`; each sample belongs to a family
    /// whose TYPE came before it (a histogram's as `_bucket`, `_sum`, `_count`), each
    /// family has one TYPE and a HELP, no series repeats, and each histogram's buckets are
    /// cumulative and end with `le="+Inf"` equal to its `_count`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut e = Exposition::default();
        let mut seen = std::collections::BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let at = |what: &str| anyhow::anyhow!("line {}: {what}: {line:?}", n + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("HELP without text"))?;
                anyhow::ensure!(valid_name(name), at("bad metric name"));
                anyhow::ensure!(
                    e.helps.insert(name.into(), help.into()).is_none(),
                    at("second HELP")
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| at("TYPE without type"))?;
                anyhow::ensure!(valid_name(name), at("bad metric name"));
                anyhow::ensure!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    at("unknown type")
                );
                anyhow::ensure!(
                    e.types.insert(name.into(), kind.into()).is_none(),
                    at("second TYPE")
                );
                continue;
            }
            anyhow::ensure!(!line.starts_with('#'), at("unknown comment"));
            let sample = parse_sample(line).map_err(|m| at(&m))?;
            let family = e
                .family_of(&sample.name)
                .ok_or_else(|| at("no TYPE before it"))?;
            if e.types[&family] == "histogram" && sample.name.ends_with("_bucket") {
                anyhow::ensure!(sample.labels.contains_key("le"), at("bucket without le"));
            }
            anyhow::ensure!(
                seen.insert((sample.name.clone(), sample.labels.clone())),
                at("series repeated")
            );
            e.samples.push(sample);
        }
        for family in e.types.keys() {
            anyhow::ensure!(e.helps.contains_key(family), "{family} has no HELP");
        }
        e.check_histograms()?;
        Ok(e)
    }

    /// The family a sample name belongs to.
    pub fn family_of(&self, name: &str) -> Option<String> {
        if self.types.contains_key(name) {
            return Some(name.into());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (self.types.get(base)? == "histogram").then(|| base.to_string())
        })
    }

    fn check_histograms(&self) -> anyhow::Result<()> {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut labels = s.labels.clone();
                let le = labels.remove("le").unwrap_or_default();
                let le = parse_value(&le).map_err(|m| anyhow::anyhow!("{family}: le {m}"))?;
                series.entry(labels).or_default().push((le, s.value));
            }
            for (labels, buckets) in series {
                let counts: Vec<f64> = buckets.iter().map(|b| b.1).collect();
                anyhow::ensure!(
                    counts.windows(2).all(|w| w[0] <= w[1]),
                    "{family}{labels:?}: buckets are not cumulative: {buckets:?}"
                );
                anyhow::ensure!(
                    buckets.windows(2).all(|w| w[0].0 < w[1].0),
                    "{family}{labels:?}: bucket bounds do not increase"
                );
                let last = buckets.last().copied().unwrap_or((0.0, 0.0));
                anyhow::ensure!(
                    last.0 == f64::INFINITY,
                    "{family}{labels:?}: no +Inf bucket"
                );
                let count = self
                    .samples
                    .iter()
                    .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                    .map(|s| s.value);
                anyhow::ensure!(
                    count == Some(last.1),
                    "{family}{labels:?}: _count {count:?} differs from the +Inf bucket {}",
                    last.1
                );
            }
        }
        Ok(())
    }

    /// The value of the one sample named `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} matches several series");
        found.first().map(|s| s.value)
    }

    /// The value of `name`, which must be there.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("{name} is missing from /metrics"))
    }

    /// Every sample named `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// `name{k="v",...} value [timestamp]`, label values with `\\`, `\"` and `\n` escapes.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut l) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = l.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = l.split_once("=\"").ok_or("bad label")?;
            if !valid_name(key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("bad escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} repeated"));
            }
            l = &after[end + 1..];
            l = l.strip_prefix(',').unwrap_or(l);
        }
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    Ok(Sample {
        name: name.into(),
        labels,
        value,
    })
}
