//! Tests of `cargo xtask bench`'s parts.

use super::*;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn passes_user_arguments_after_the_package() {
    let user = strings(&["--bench", "codec", "--", "decode"]);
    assert_eq!(
        bench_args(&user),
        [
            "bench",
            "-p",
            "brook-benches",
            "--bench",
            "codec",
            "--",
            "decode"
        ]
    );
    assert_eq!(bench_args(&[]), ["bench", "-p", "brook-benches"]);
}

#[test]
fn target_dir_follows_cargo_target_dir() {
    let root = Path::new("/repo");
    assert_eq!(target_dir(root, None), Path::new("/repo/target"));
    assert_eq!(target_dir(root, Some("".into())), Path::new("/repo/target"));
    assert_eq!(target_dir(root, Some("out".into())), Path::new("/repo/out"));
    assert_eq!(target_dir(root, Some("/tmp/t".into())), Path::new("/tmp/t"));
}

#[test]
fn the_bench_packages_exist() {
    let manifest = fs::read_to_string(repo_root().join("benches").join("Cargo.toml"))
        .expect("benches/Cargo.toml is readable");
    assert!(manifest.contains(&format!("name = \"{PACKAGE}\"")));
    let compare = fs::read_to_string(repo_root().join("benches/compare/Cargo.toml"))
        .expect("benches/compare/Cargo.toml is readable");
    assert!(compare.contains("[workspace]"));
    assert!(compare.contains("mongodb"));
}

#[test]
fn options_parse() {
    let o = Options::parse(&[]).expect("defaults");
    assert_eq!((o.quick, o.rounds, o.seconds), (false, 5, 2.0));
    let q = Options::parse(&strings(&["--quick", "--only", "idle", "--no-e2e"])).expect("quick");
    assert_eq!((q.quick, q.rounds, q.seconds, q.e2e), (true, 1, 0.3, false));
    assert_eq!(q.only, ["idle"]);
    let r = Options::parse(&strings(&["--quick", "--rounds", "3", "--seconds", "1"])).expect("r");
    assert_eq!((r.rounds, r.seconds), (3, 1.0));
    assert!(Options::parse(&strings(&["--seconds"])).is_err());
    assert!(Options::parse(&strings(&["--frobnicate"])).is_err());
    assert!(Options::parse(&strings(&["--seconds", "0"])).is_err());
    assert_eq!((o.failovers, q.failovers), (40, MIN_FAILOVERS));
    let f = Options::parse(&strings(&["--quick", "--failovers", "25"])).expect("f");
    assert_eq!(f.failovers, 25);
    assert!(Options::parse(&strings(&["--failovers", "5"])).is_err());
}

fn bins() -> Bins {
    Bins {
        server: "/t/replay-server".into(),
        brook: "/t/brook-bench".into(),
        failover: "/t/failover-bench".into(),
        compare: "/t/compare-bench".into(),
    }
}

#[test]
fn failover_clients_get_the_same_options() {
    let brook = failover_args(&bins(), "kill", "brook", 20);
    assert_eq!(
        brook,
        [
            "--kind",
            "kill",
            "--failovers",
            "20",
            "--uri-options",
            FAILOVER_URI_OPTIONS,
            "--",
            "/t/brook-bench",
            "--client",
            "brook-doc",
            "--scenario",
            "failover-tail"
        ]
    );
    let official = failover_args(&bins(), "kill", "official", 20);
    assert_eq!(official[5], FAILOVER_URI_OPTIONS);
    assert_eq!(official[7], "/t/compare-bench");
    for client in ["brook-poll", "official-poll"] {
        let poll = failover_args(&bins(), "kill", client, 20);
        assert_eq!(
            poll[5],
            format!("{FAILOVER_URI_OPTIONS}&serverMonitoringMode=poll")
        );
    }
    assert_eq!(
        failover_args(&bins(), "kill", "brook-poll", 20)[7],
        "/t/brook-bench"
    );
}

#[test]
fn the_failover_table_has_ratios_to_the_official_driver() {
    let mut f = Failovers {
        failovers: 20,
        ..Failovers::default()
    };
    for (client, p50, lost) in [("brook", 2e6, 0.0), ("official", 1e6, 3.0)] {
        let mut o = Obj::new();
        o.insert("p50_ns".into(), Val::Num(p50));
        o.insert("p99_ns".into(), Val::Num(p50 * 4.0));
        o.insert("lost".into(), Val::Num(lost));
        o.insert("failovers_losing_events".into(), Val::Num(lost / 2.0));
        if lost > 0.0 {
            o.insert("lost_first".into(), Val::Str("7;8".into()));
        }
        f.by_run.insert(("kill".into(), client.into()), o);
    }
    let md = failover_markdown(&f, "##");
    assert!(md.starts_with("## Failover time"));
    assert!(md.contains(
        "| kill | as they come (streaming) | 2.00 | 8.00 | 1.00 | 4.00 | 2.00× | 2.00× |"
    ));
    assert!(!md.contains("| stepdown |"), "no row without results");
    assert!(!md.contains("| kill | `serverMonitoringMode=poll`"));
    assert!(md.contains("- kill, official: lost events (first ones): 7, 8"));
    assert!(md.contains("**kill, official: 2 of – failovers lost events** (3 events"));
    assert_eq!(fmt_ms(Some(123_456_789.0)), "123");
    assert_eq!(fmt_ms(Some(12_345_678.0)), "12.3");
    assert_eq!(fmt_ms(None), "–");
    let page = format!("# t\n\n| a |\n{NOTES_MARKER}\n\n## Notes\n");
    assert_eq!(kept_notes(&page), format!("\n{NOTES_MARKER}\n\n## Notes\n"));
    assert_eq!(kept_notes("# t\n"), "");
}

#[test]
fn flat_json_round_trips() {
    let o = parse_flat_json(r#"{"a":1.5,"b":"x\"y","c":null,"d":true,"e":-3e2, "f" : "p:1;q:2"}"#)
        .expect("parses");
    assert_eq!(num(&o, "a"), Some(1.5));
    assert_eq!(o.get("b"), Some(&Val::Str("x\"y".to_owned())));
    assert_eq!(o.get("c"), Some(&Val::Null));
    assert_eq!(num(&o, "d"), Some(1.0));
    assert_eq!(num(&o, "e"), Some(-300.0));
    assert_eq!(parse_flat_json(&to_json(&o)), Some(o));
    assert_eq!(parse_flat_json("{}"), Some(Obj::new()));
    assert_eq!(parse_flat_json(r#"{"a":[1]}"#), None);
    assert_eq!(parse_flat_json("nope"), None);
    // Numbers keep the form Rust's Display gives them; non-finite ones are null.
    let o: Obj = [
        ("n".to_owned(), Val::Num(12.0)),
        ("f".to_owned(), Val::Num(1.5)),
        ("i".to_owned(), Val::Num(f64::INFINITY)),
        ("s".to_owned(), Val::Str("a\"b\n".into())),
    ]
    .into_iter()
    .collect();
    assert_eq!(to_json(&o), r#"{"f":1.5,"i":null,"n":12,"s":"a\"b\n"}"#);
}

#[test]
fn medians_and_distributions() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    assert_eq!(median(vec![f64::NAN]), None);
    let mut runs = Runs::default();
    for (p50, dist) in [
        (10.0, "50:10;99:30"),
        (20.0, "50:20;99:50"),
        (30.0, "50:30;99:40"),
    ] {
        let mut o = Obj::new();
        o.insert("p50_ns".into(), Val::Num(p50));
        o.insert("dist".into(), Val::Str(dist.into()));
        runs.by_client.entry("c".into()).or_default().push(o);
    }
    assert_eq!(runs.med("c", "p50_ns"), Some(20.0));
    assert_eq!(runs.dist("c"), vec![(50.0, 20.0), (99.0, 40.0)]);
    assert_eq!(runs.med("nobody", "p50_ns"), None);
}

#[test]
fn crates_are_counted_once() {
    let tree = "brook-cli v0.1.0 (/w/crates/cli)\nbson v3.1.0\nserde v1.0.228\n\
                bson v3.1.0 (*)\nserde v1.0.228\n\n";
    assert_eq!(count_crates(tree), 3);
}

#[test]
fn charts_are_svg() {
    let series = vec![
        ("brook-raw".to_owned(), vec![(0.0, 10.0), (1.0, 20.0)]),
        (
            "official-typed 2 KB".to_owned(),
            vec![(0.0, 30.0), (1.0, 2000.0)],
        ),
    ];
    let svg = line_chart(&Chart {
        title: "t <&>",
        x_label: "x",
        y_label: "y",
        x_ticks: &[(0.0, "0".to_owned()), (1.0, "1".to_owned())],
        x_range: (0.0, 1.0),
        series: &series,
        dashed: &[1],
    });
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains("t &lt;&amp;&gt;"));
    assert!(svg.contains("stroke-dasharray"));
    assert!(
        line_chart(&Chart {
            series: &[],
            ..Chart {
                title: "",
                x_label: "",
                y_label: "",
                x_ticks: &[],
                x_range: (0.0, 1.0),
                series: &[],
                dashed: &[]
            }
        })
        .contains("no data")
    );
}

#[test]
fn every_scenario_has_a_unique_id_and_clients() {
    let all = scenarios(false);
    let mut ids: Vec<_> = all.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    assert!(
        all.iter()
            .all(|s| !s.clients.is_empty() && !s.id.is_empty())
    );
    assert_eq!(
        scenarios(true)
            .iter()
            .find(|s| s.id == "rss1000")
            .map(|s| s.streams),
        Some(100)
    );
}
