"""forcelink: two-way CDC sync between Postgres and Salesforce."""
