"""The dice web example: one page that rolls a die on a dice fleet node
through the dice_client package and shows the face, or says why it could not."""
