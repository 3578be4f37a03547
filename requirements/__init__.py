"""The hashed lock files. A package only so that the runtime lock `runtime.txt` installs with the
device as its data: the SBOM (`submission.sbom`) is generated from it wherever the device runs."""
