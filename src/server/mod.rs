//! HTTP/WebSocket service (to be written).
