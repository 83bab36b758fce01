"""Helpers shared by the test suites: file writers for the dataset readers, and the service and worker test kits."""
