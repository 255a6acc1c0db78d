//! A directory of templates (`templates-dir`): every `*.md` file but `README.md`, the file name without `.md`
//! being the id. Read the same way by the server, which polls it, and by `commandpost templates check`.

use std::path::Path;

use super::Source;

/// The file a template directory may hold beside the templates, as `templates/` does.
const README: &str = "README.md";

/// The templates in `dir`, sorted by file name, each named in errors by its file name alone (the directory is
/// the operator's to add). Hidden files (an editor's `.name.md.swp`, `.#name.md`) are skipped; a file that is
/// not UTF-8 is still returned, to be refused with its name.
pub fn read(dir: &Path) -> std::io::Result<Vec<Source>> {
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(id) = name.strip_suffix(".md") else {
            continue;
        };
        if name == README || name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        sources.push(Source {
            id: id.to_owned(),
            file: name.to_owned(),
            text: std::fs::read(entry.path())?,
        });
    }
    sources.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markdown_files_but_the_readme_and_hidden_ones() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for name in ["b.md", "a.md", "README.md", ".a.md", "notes.txt"] {
            std::fs::write(dir.path().join(name), name).expect("write");
        }
        std::fs::create_dir(dir.path().join("sub.md")).expect("a directory named like a template");
        let sources = read(dir.path()).expect("read");
        let files: Vec<_> = sources
            .iter()
            .map(|s| (s.id.as_str(), s.file.as_str()))
            .collect();
        assert_eq!(files, [("a", "a.md"), ("b", "b.md")]);
        assert_eq!(sources[0].text, b"a.md");
    }
}
