"""The Salesforce side: login, REST/Bulk calls and change-event streaming."""
