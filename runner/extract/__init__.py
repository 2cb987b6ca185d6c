"""Bulk extraction: documents and a JSON schema in, a validated table out (``runner extract``).

sources     the documents: a folder of .txt / .md files, or a CSV / JSONL file with a text column
schema      the user's JSON Schema (or Pydantic model) made strict for structured outputs, and the validator
requests    one request line per document (or per chunk of a long one), and the repair request
answers     what an answer is worth: valid rows, or the reason it is not
job         the extraction as a whole: build, run (sync, batch or auto), check, repair once, store the table
spec        a job spec file (TOML) with the same keys as the command line
"""
