"""Text: annotation formats, the answer normaliser, hard negatives."""
