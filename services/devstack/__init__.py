"""The local stack: SeaweedFS (S3), PostgreSQL + MLflow, Redis, RabbitMQ and Triton on one machine.

``python -m devstack up|down|status`` runs the fixed-port stack under ``.stack/``; the building
blocks (``processes``, ``components``, ``system_services``, ``triton_home``) also serve the test
fixtures, which start their own instances on free ports.
"""
