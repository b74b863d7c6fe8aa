"""Export of a whole consult from this client, after local decryption: a FHIR R4 Bundle
(``fhir.build_bundle``) or a printable HTML page (``html.build_html``) from the model
``model.gather`` reads. Nothing of an export is sent to the server."""
