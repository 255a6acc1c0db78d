//! The automerge-repo wire protocol (being written).
