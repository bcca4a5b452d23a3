//! End to end on nx-27017: inserted events consumed by brook and by pymongo, both
//! resuming after the same token.

use super::*;

#[derive(Debug, Default, Clone)]
pub(super) struct E2e {
    pub(super) count: u64,
    pub(super) by_client: BTreeMap<String, Vec<f64>>,
    pub(super) errors: Vec<String>,
}

pub(super) const PY_PREPARE: &str = r#"
import sys, json
from bson import ObjectId
from pymongo import MongoClient
uri, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = MongoClient(uri, directConnection=True)
coll = c["bench"][name]
coll.drop()
coll.insert_one({"_id": "setup"})
with coll.watch() as s:
    coll.insert_one({"_id": "marker"})
    token = s.next()["_id"]
docs = [{"_id": ObjectId(), "customer": "c%05d" % (i % 50000), "total": 19.99 + i % 100,
         "note": "x" * 160} for i in range(count)]
for i in range(0, count, 1000):
    coll.insert_many(docs[i:i+1000])
print(json.dumps({"resume_after": token["_data"]}))
"#;

pub(super) const PY_CONSUME: &str = r#"
import sys, json, time
from pymongo import MongoClient
uri, count, data, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = MongoClient(uri, directConnection=True)
coll = c["bench"][name]
start = time.perf_counter()
n = 0
with coll.watch(resume_after={"_data": data}, batch_size=1000) as s:
    for _ in s:
        n += 1
        if n >= count:
            break
el = time.perf_counter() - start
print(json.dumps({"events": n, "seconds": el, "events_per_s": n / el}))
"#;

pub(super) fn e2e(bins: &Bins, count: u64, rounds: usize, log: &mut fs::File) -> E2e {
    let mut out = E2e {
        count,
        ..E2e::default()
    };
    if let Err(e) = peer::install() {
        out.errors.push(format!("peer install: {e}"));
        return out;
    }
    let nx = match peer::Peer::start_for_test() {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("peer start: {e}"));
            return out;
        }
    };
    let uri = nx.uri();
    let python = peer::venv_dir().join("bin").join("python");
    // Each consumer reads the 10,000 events once enough to resume: so every run gets its
    // own collection, filled the same way just before it, and its own marker token.
    let limit = Duration::from_secs(300);
    // Typed `Order`s cannot be read from nx-27017 (it writes ObjectIds as
    // `{__neosqlite_objectid__, id}`): brook's typed client reads `Document`s, like pymongo.
    let clients = ["brook-raw", "brook-doc", "pymongo"];
    for round in 0..rounds {
        for i in 0..clients.len() {
            let client = clients[(i + round) % clients.len()];
            let coll = format!("e2e_{round}_{i}");
            let prepared = run_json(
                Command::new(&python).args(["-c", PY_PREPARE, &uri, &count.to_string(), &coll]),
                limit,
            );
            let token = match prepared.as_ref().map(|o| o.get("resume_after")) {
                Ok(Some(Val::Str(t))) => t.clone(),
                Ok(_) => {
                    out.errors
                        .push("the prepare script printed no token".to_owned());
                    continue;
                }
                Err(e) => {
                    out.errors.push(format!("prepare: {e}"));
                    continue;
                }
            };
            let mut cmd = if client == "pymongo" {
                let mut c = Command::new(&python);
                c.args(["-c", PY_CONSUME, &uri, &count.to_string(), &token, &coll]);
                c
            } else {
                let mut c = Command::new(&bins.brook);
                c.args(["--client", client, "--scenario", "e2e", "--uri", &uri])
                    .args(["--db", "bench", "--coll", &coll, "--batch-size", "1000"])
                    .args(["--count", &count.to_string(), "--resume-after", &token]);
                c
            };
            eprint!("  e2e        round {}/{} {:<15}", round + 1, rounds, client);
            match run_json(&mut cmd, Duration::from_secs(120)) {
                Ok(o) => {
                    let eps = num(&o, "events_per_s");
                    eprintln!(" {:.0} events/s", eps.unwrap_or(0.0));
                    let _logged = writeln!(log, "e2e\t{client}\t{}", to_json(&o));
                    if let Some(e) = eps {
                        out.by_client.entry(client.to_owned()).or_default().push(e);
                    }
                }
                Err(e) => {
                    eprintln!(" FAILED");
                    eprintln!("    {e}");
                    out.errors.push(format!("{client}: {e}"));
                }
            }
        }
    }
    if let Err(e) = nx.stop() {
        out.errors.push(format!("peer stop: {e}"));
    }
    out
}
