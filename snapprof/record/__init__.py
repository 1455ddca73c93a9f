"""The recorder: runs on the machine being hibernated; standard library and bcc only."""
