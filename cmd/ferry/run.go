package main

import (
	"context"
	"errors"
)

func runNotebook(ctx context.Context, args []string) error {
	return errors.New("ferry run is being written")
}
