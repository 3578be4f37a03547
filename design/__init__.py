"""Design controls as data: software requirements, hazards (ISO 14971) and known anomalies
(`design/*.yml`, each checked against its JSON schema by `design.spec`), the pytest marker that
traces a test to the requirements it verifies (`design.pytest_plugin`), and the verification
record written from a test run (`python -m design.verify`, record `verification.tests`)."""
