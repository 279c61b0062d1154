"""The offline stack: moto as AWS from template.yaml, the HTTP front and SQS trigger calling the real functions,
the Pluggy emulator, built-artifact invokes with SAM's env-var rules, and the events/ corpora. Dev-only.
"""
