//! JSON lines appended to a local file, flushed per alert. The file is
//! reopened when it is moved or deleted (log rotation), so rotation needs
//! no signal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::alerts::delivery::{AlertSink, DeliveryError};
use crate::alerts::format::json_line;
use crate::alerts::Alert;

pub(crate) struct JsonLinesFile {
    path: PathBuf,
    file: File,
}

impl JsonLinesFile {
    /// Opens (creating) the file for appending; its directory must exist.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !directory.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("directory {} does not exist", directory.display()),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: append(path)?,
        })
    }

    /// Whether `path` still names the open file.
    fn still_at_path(&self) -> bool {
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.dev() == open.dev() && at_path.ino() == open.ino(),
            _ => false,
        }
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AlertSink for JsonLinesFile {
    fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let line = json_line(alert).map_err(|e| DeliveryError::Encode(e.to_string()))?;
        if !self.still_at_path() {
            self.file = append(&self.path).map_err(DeliveryError::io("reopen"))?;
        }
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(DeliveryError::io("write"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;

    fn alert(n: u64) -> Alert {
        Alert {
            time_ms: n,
            src: Some("shop/web".into()),
            ..Alert::now(AlertKind::Quarantine, 2, format!("quarantined {n}"))
        }
    }

    #[test]
    fn a_rotated_file_is_reopened_at_its_path() {
        let dir = std::env::temp_dir().join(format!("microseg-alerts-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("alerts.jsonl");
        let mut sink = JsonLinesFile::open(&path).expect("opens");
        sink.deliver(&alert(1)).expect("written");
        std::fs::rename(&path, dir.join("alerts.jsonl.1")).expect("rotate");
        sink.deliver(&alert(2)).expect("written");
        let current = std::fs::read_to_string(&path).expect("new file");
        let rotated = std::fs::read_to_string(dir.join("alerts.jsonl.1")).expect("old file");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(rotated.contains("quarantined 1") && !rotated.contains("quarantined 2"));
        assert_eq!(current.lines().count(), 1);
        assert!(current.contains("quarantined 2"), "{current}");
    }

    #[test]
    fn a_missing_directory_is_refused_at_open() {
        let error = JsonLinesFile::open(Path::new("/nonexistent-microseg/alerts.jsonl"))
            .err()
            .expect("refused");
        assert_eq!(
            error.to_string(),
            "directory /nonexistent-microseg does not exist"
        );
    }
}
