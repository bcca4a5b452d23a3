//! The scenarios (latency, throughput, idle streams, decode…), each a replay-server
//! setting and the clients run against it, and what their processes print: one flat JSON
//! object per run, collected into [`Runs`].

use super::*;

pub(super) const FLOOR: &str = "floor-tokio";
pub(super) const OFFICIAL: &str = "official-typed";
pub(super) const ALL_CLIENTS: [&str; 6] = [
    "floor-tokio",
    "floor-std",
    "brook-typed",
    "brook-raw",
    "official-typed",
    "official-raw",
];
pub(super) const ASYNC_CLIENTS: [&str; 5] = [
    "floor-tokio",
    "brook-typed",
    "brook-raw",
    "official-typed",
    "official-raw",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// One stream; events come back in every getMore.
    Stream,
    /// One stream; every getMore comes back empty.
    Idle,
    /// Many streams on one client.
    Concurrent,
    /// Many open, idle streams.
    IdleRss,
}

impl Kind {
    pub(super) fn arg(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Idle => "idle",
            Kind::Concurrent => "concurrent",
            Kind::IdleRss => "idle-rss",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) kind: Kind,
    pub(super) events: u64,
    pub(super) size: usize,
    pub(super) delay_ms: u64,
    pub(super) streams: usize,
    pub(super) clients: &'static [&'static str],
}

pub(super) fn scenarios(quick: bool) -> Vec<Scenario> {
    let s = |id, title, events, size| Scenario {
        id,
        title,
        kind: Kind::Stream,
        events,
        size,
        delay_ms: 0,
        streams: 1,
        clients: &ALL_CLIENTS,
    };
    vec![
        s("latency", "one ~300 B event per getMore", 1, 300),
        s("b10_300", "batches of 10 events of ~300 B", 10, 300),
        s("b100_300", "batches of 100 events of ~300 B", 100, 300),
        s("b1000_300", "batches of 1,000 events of ~300 B", 1000, 300),
        s("b100_2k", "batches of 100 events of ~2 KB", 100, 2048),
        s("b1000_2k", "batches of 1,000 events of ~2 KB", 1000, 2048),
        Scenario {
            id: "idle",
            title: "empty getMores (idle round trips)",
            kind: Kind::Idle,
            events: 0,
            ..s("", "", 0, 300)
        },
        Scenario {
            id: "c100",
            title: "100 concurrent streams on one client, one event per getMore",
            kind: Kind::Concurrent,
            streams: 100,
            clients: &ASYNC_CLIENTS,
            ..s("", "", 1, 300)
        },
        Scenario {
            id: "rss1000",
            title: "1,000 idle streams (getMores held 500 ms)",
            kind: Kind::IdleRss,
            events: 0,
            delay_ms: 500,
            streams: if quick { 100 } else { 1000 },
            clients: &ASYNC_CLIENTS,
            ..s("", "", 0, 300)
        },
    ]
}

// ---------------------------------------------------------------------------------------
// A flat JSON object (what the bench binaries print)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    Num(f64),
    Str(String),
    Null,
}

pub(super) type Obj = BTreeMap<String, Val>;

/// Parses one flat JSON object: string keys, values that are numbers, strings, booleans
/// (as 0/1) or null. Nested values are refused.
pub(super) fn parse_flat_json(text: &str) -> Option<Obj> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    object
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                serde_json::Value::Null => Val::Null,
                serde_json::Value::Bool(b) => Val::Num(if b { 1.0 } else { 0.0 }),
                serde_json::Value::Number(n) => Val::Num(n.as_f64()?),
                serde_json::Value::String(s) => Val::Str(s),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => return None,
            };
            Some((key, value))
        })
        .collect()
}

/// `n` as a JSON number, written as Rust's `Display` writes it: integral values without
/// a fraction (`12`, not `12.0`), so that the files keep the form they always had; null
/// when it is not finite.
pub(super) fn json_number(n: f64) -> serde_json::Value {
    // 2^53: beyond it an f64 holds no fraction, and not every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // Integral and within ±2^53: the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        serde_json::Value::from(i)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

pub(super) fn num(o: &Obj, key: &str) -> Option<f64> {
    match o.get(key) {
        Some(Val::Num(n)) => Some(*n),
        _ => None,
    }
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The results of one scenario: every run of every client.
#[derive(Debug, Default, Clone)]
pub(super) struct Runs {
    pub(super) by_client: BTreeMap<String, Vec<Obj>>,
    pub(super) frame_len: Option<f64>,
    pub(super) errors: Vec<String>,
}

impl Runs {
    /// The median over rounds of `key` for `client`.
    pub(super) fn med(&self, client: &str, key: &str) -> Option<f64> {
        let runs = self.by_client.get(client)?;
        median(runs.iter().filter_map(|o| num(o, key)).collect())
    }

    /// The median over rounds of each point of a client's latency distribution
    /// (`dist` = `"percentile:ns;..."`).
    pub(super) fn dist(&self, client: &str) -> Vec<(f64, f64)> {
        let Some(runs) = self.by_client.get(client) else {
            return Vec::new();
        };
        let mut points: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut order = Vec::new();
        for o in runs {
            if let Some(Val::Str(d)) = o.get("dist") {
                for pair in d.split(';') {
                    if let Some((p, ns)) = pair.split_once(':')
                        && let Ok(ns) = ns.parse::<f64>()
                    {
                        if !points.contains_key(p) {
                            order.push(p.to_owned());
                        }
                        points.entry(p.to_owned()).or_default().push(ns);
                    }
                }
            }
        }
        order
            .iter()
            .filter_map(|p| {
                let pct = p.parse::<f64>().ok()?;
                Some((pct, median(points.get(p)?.clone())?))
            })
            .collect()
    }
}
