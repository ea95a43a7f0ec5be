//! Placeholder: filled by the vhost-backend work (packet descriptors and rings).
