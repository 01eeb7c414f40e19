"""What a served model is, as every area reads it: the typed `ModelSpec` (`model`), the names that cross a
boundary between areas (`names`) and server addresses as users write them (`endpoints`). Imports only pydantic
and the standard library, so the SDK can depend on it."""
