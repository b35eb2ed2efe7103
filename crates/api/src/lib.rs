//! DataExport API types and the names the module's components share.
