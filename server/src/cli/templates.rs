//! `commandpost templates check [DIR]` and `commandpost templates preview FILE`: a team's templates checked and
//! rendered without a server or a store, as the server would load them (for the team's CI and their editor).

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use incident_doc::{Declaration, Editor, Incident};

use crate::templates::{Source, dir};

/// Checks every template in `templates_dir` as `serve` would load it: prints one line per template that
/// passes and each refusal as `path:line: reason` on stderr; fails if any is refused or there are none.
pub fn check(templates_dir: &Path) -> anyhow::Result<()> {
    let sources =
        dir::read(templates_dir).with_context(|| format!("reading {}", templates_dir.display()))?;
    anyhow::ensure!(
        !sources.is_empty(),
        "no templates (*.md other than README.md) in {}",
        templates_dir.display()
    );
    let builtin = incident_doc::template::builtin_sources();
    let mut refused = 0;
    for source in &sources {
        match source.parse() {
            Ok(template) => {
                let overrides = if builtin.iter().any(|(id, _)| *id == template.id) {
                    " (overrides the built-in template)"
                } else {
                    ""
                };
                println!(
                    "ok\t{}\t{}\tversion {}\t{} fields{overrides}",
                    template.id,
                    template.name,
                    template.version,
                    template.fields.len()
                );
            }
            Err(error) => {
                refused += 1;
                eprintln!(
                    "{}:{}: {}",
                    templates_dir.join(&error.file).display(),
                    error.line,
                    error.reason
                );
            }
        }
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} of {} templates refused",
        sources.len()
    );
    Ok(())
}

/// Prints, as Markdown, the incident `file` would declare under the name `name` (today, by `preview`, without a
/// number); its id, name and version go to stderr.
pub fn preview(file: &Path, name: &str) -> anyhow::Result<()> {
    let id = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("{}: not a template file name", file.display()))?;
    let source = Source {
        id: id.to_owned(),
        file: file.display().to_string(),
        text: std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    };
    let template = source.parse()?;
    let declaration = Declaration {
        name: name.to_owned(),
        number: None,
    };
    let incident = Incident::create(
        &template,
        &declaration,
        &Editor::new("preview", Utc::now()),
        None,
    )
    .context("declaring an incident from it")?;
    eprintln!(
        "commandpost: {} ({}), version {}",
        template.name, template.id, template.version
    );
    print!("{}", incident_doc::export::markdown(&incident.view()));
    Ok(())
}
