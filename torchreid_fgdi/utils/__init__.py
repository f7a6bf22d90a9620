"""Small helpers every layer may use and that import nothing of the package but `errors`: whole-file
writes (`atomic`), the checkpoint file (`checkpoint`), the cache folder (`cache`) and the one reader
of config YAML (`config_yaml`)."""
