//! Criterion benchmarks of the model's hot paths: declaring an incident, appending timeline entries, exporting a
//! long document. Figures are recorded in BENCHMARKS.md.

// `criterion_group!` generates a public function that cannot carry a doc comment.
#![allow(missing_docs)]

use chrono::{Duration, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use incident_doc::{Declaration, Editor, Incident, Operation, Template, export, template};

fn editor(seconds: i64) -> Editor {
    let start = Utc
        .with_ymd_and_hms(2026, 11, 25, 4, 0, 0)
        .single()
        .expect("time");
    Editor::new("bench", start + Duration::seconds(seconds))
}

fn declare(template: &Template) -> Incident {
    Incident::create(
        template,
        &Declaration {
            name: "Bench".into(),
            number: Some(1),
        },
        &editor(0),
        None,
    )
    .expect("create")
}

fn with_entries(template: &Template, n: usize) -> Incident {
    let mut incident = declare(template);
    for i in 0..n {
        let op = Operation::AddTimelineEntry {
            text: format!("Entry {i}: checked the dashboards"),
            at: None,
        };
        incident.apply(&op, &editor(i as i64)).expect("append");
    }
    incident
}

fn benches(c: &mut Criterion) {
    let template = template::builtin().into_iter().next().expect("template");
    c.bench_function("instantiate the default template", |b| {
        b.iter(|| declare(&template))
    });
    let mut group = c.benchmark_group("timeline");
    group.sample_size(10);
    group.bench_function("add 10,000 timeline entries", |b| {
        b.iter_batched(
            || declare(&template),
            |mut incident| {
                for i in 0..10_000 {
                    let op = Operation::AddTimelineEntry {
                        text: format!("Entry {i}"),
                        at: None,
                    };
                    incident.apply(&op, &editor(i)).expect("append");
                }
                incident
            },
            BatchSize::PerIteration,
        )
    });
    let big = with_entries(&template, 10_000);
    group.bench_function("export Markdown with 10,000 entries", |b| {
        b.iter(|| export::markdown(&big.view()))
    });
    group.bench_function("read the view with 10,000 entries", |b| {
        b.iter(|| big.view())
    });
    group.finish();
}

criterion_group!(model, benches);
criterion_main!(model);
