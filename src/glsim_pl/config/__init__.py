"""The code that reads ``conf/``: where it is, config groups -> constructor keywords, value checks, run folders."""
