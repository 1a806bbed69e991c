"""DynamoDB single-table data layer for receipts and their word labels."""
