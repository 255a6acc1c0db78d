//! Fuzzes the Markdown template parser (`Template::parse`, which reads operator-supplied templates): any text
//! parses or fails with a `TemplateError`, never panics, and a template that parses declares an incident whose
//! document reads back and renders as Markdown.

#![no_main]

use commandpost_fuzz::moment;
use incident_doc::export::markdown;
use incident_doc::{Declaration, Editor, Incident, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    let Ok(template) = Template::parse("fuzzed", "fuzzed.md", source) else {
        return;
    };
    let declaration = Declaration {
        name: "Fuzzed".to_owned(),
        number: Some(1),
    };
    let editor = Editor::new("fuzzer", moment());
    if let Ok(incident) = Incident::create(&template, &declaration, &editor, None) {
        let _ = markdown(&incident.view());
    }
});
