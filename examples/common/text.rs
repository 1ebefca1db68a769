//! Text helpers shared by the character-model examples: a vocabulary and a
//! corpus reader.

use std::path::{Path, PathBuf};

/// The characters of a text and their ids.
pub struct Vocab {
    /// The characters, sorted; a character's id is its index.
    pub chars: Vec<char>,
}

impl Vocab {
    /// Every distinct character of `text`.
    pub fn of(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocab { chars }
    }
    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<i64> {
        self.chars.binary_search(&c).ok().map(|i| i as i64)
    }
    /// The ids of `s`, or an error naming the first unknown character.
    pub fn encode(&self, s: &str) -> Result<Vec<i64>, String> {
        s.chars()
            .map(|c| self.id(c).ok_or_else(|| format!("the character {c:?} is not in the model's vocabulary")))
            .collect()
    }
    /// The text of `ids` (`?` for an unknown id).
    #[allow(dead_code)]
    pub fn decode(&self, ids: &[i64]) -> String {
        ids.iter().map(|&i| self.chars.get(i as usize).copied().unwrap_or('?')).collect()
    }
}

/// Files larger than this are skipped when reading a directory.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// A UTF-8 file, or every UTF-8 file under a directory (recursively, in path
/// order) concatenated. In a directory, files that are not UTF-8 or larger than
/// 16 MiB are skipped, and so are symbolic links, hidden entries (`.git`) and
/// `target` directories.
pub fn read_corpus(path: &Path) -> Result<String, String> {
    if !path.is_dir() {
        return std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut text = String::new();
    for f in files {
        let Ok(meta) = std::fs::symlink_metadata(&f) else { continue };
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if meta.file_type().is_symlink() || name.starts_with('.') {
            continue;
        }
        if meta.is_dir() {
            if name != "target" {
                text.push_str(&read_corpus(&f)?);
            }
        } else if meta.len() <= MAX_FILE_BYTES {
            if let Ok(t) = std::fs::read_to_string(&f) {
                text.push_str(&t);
            }
        }
    }
    Ok(text)
}
