"""The local Salesforce org: an emulator of the real wire protocols."""
