"""The Apache Beam feature-extraction pipeline (runner-agnostic) and its transforms."""
