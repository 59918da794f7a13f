"""The Kopf operator: thin handlers over the pure planner in `esteira.state`."""
