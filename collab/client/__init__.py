"""The collab client SDK: CR1 over HTTP and WebSockets. Imports collab.crypto, never Django."""
