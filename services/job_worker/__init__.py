"""The job worker: takes jobs off the RabbitMQ work queue and runs them (a process, or a Kubernetes Job)."""
